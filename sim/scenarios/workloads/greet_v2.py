# The workloads scenario's second version: the same subject, a service endpoint beside it.


def setup(ctx):
    ctx.subscribe(f"greet.{ctx.leaf.name}", lambda msg: f"hello from {ctx.leaf.name}, greet v2")
    svc = ctx.service("greet", "2.0.0", description="the workloads scenario's service")
    svc.endpoint("ping", lambda msg: "pong", subject=f"greet.{ctx.leaf.name}.ping")

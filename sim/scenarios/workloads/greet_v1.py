# The workloads scenario's handler (sim/scenarios/workloads.json): greet.<edge> answers with its version.


def setup(ctx):
    ctx.subscribe(f"greet.{ctx.leaf.name}", lambda msg: f"hello from {ctx.leaf.name}, greet v1")

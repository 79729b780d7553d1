# A workload (docs/workloads.md): a NATS Micro service with one endpoint and a plain subject handler. Deployed with
#   natsedge workload deploy examples/workloads/thermo.py --name thermo --target 'kitchen-*'
# it runs on every edge the target names, answers on its subjects, and shows up in `nats micro ls` at the hub.


def c_to_f(msg):
    return f"{float(msg.data) * 9 / 5 + 32:.1f}"


def setup(ctx):
    # Everything is bound through ctx, so that a stop (update, rollback, remove) unbinds all of it.
    svc = ctx.service("thermo", "1.0.0", description="temperature conversions")
    svc.endpoint("c_to_f", c_to_f, subject=f"thermo.{ctx.leaf.name}.c_to_f")
    ctx.subscribe(f"site.{ctx.leaf.name}.hello", lambda msg: f"thermo {ctx.version} on {ctx.leaf.name}")


def teardown(ctx):
    ctx.log("stopping")

# The workloads scenario's third version, broken on purpose: its setup raises, so every edge rolls back to the
# version it ran (v2 on half of the fleet, v1 on the other half).


def setup(ctx):
    raise RuntimeError("greet v3 is broken on purpose")

# tests/edge/traceapp.py — the device code of the tracing tests (the config's "app"): a local subscriber of app.x,
# and on every message to ctl.trace a publish of app.x through the in-process API with Nats-Trace-Dest set to the
# command's payload. Prints `edge: app got N` per local delivery, in one write.

import sys


async def main(leaf):
    got = [0]

    def on_x(msg):
        got[0] += 1
        sys.stdout.write(f"edge: app got {got[0]}\n")

    def on_ctl(msg):
        leaf.publish("app.x", b"from the app", headers={"Nats-Trace-Dest": msg.data.decode()})

    leaf.subscribe("app.x", on_x)
    leaf.subscribe("ctl.trace", on_ctl)

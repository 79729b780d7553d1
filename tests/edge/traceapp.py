# tests/edge/traceapp.py — the device code of the tracing tests (the config's "app"): a local subscriber of app.x;
# on every message to ctl.trace a publish of app.x through the in-process API, and on ctl.fwd a durable publish of
# tele.app (a forward queue's subject, when the config has one), both with Nats-Trace-Dest set to the command's
# payload. Prints `edge: app got N` per local delivery and `edge: app stored SEQ` per durable publish, in one write.

import sys


async def main(leaf):
    got = [0]

    def on_x(msg):
        got[0] += 1
        sys.stdout.write(f"edge: app got {got[0]}\n")

    def on_ctl(msg):
        leaf.publish("app.x", b"from the app", headers={"Nats-Trace-Dest": msg.data.decode()})

    async def on_fwd(msg):
        seq = await leaf.publish("tele.app", b"22.5", headers={"Nats-Trace-Dest": msg.data.decode()}, durable=True)
        sys.stdout.write(f"edge: app stored {seq}\n")

    leaf.subscribe("app.x", on_x)
    leaf.subscribe("ctl.trace", on_ctl)
    leaf.subscribe("ctl.fwd", on_fwd)

# sim/edgeapp.py — the device code of a simulated edge: the "app" of its config, run by
# `micropython -m edge CONFIG.json` (and by CPython). Publishes telemetry, answers requests and obeys
# the simulator's stop command. Runs on MicroPython: no typing, no dataclasses, no f-string tricks.
#
# Rules this file keeps:
# 1. Its parameters come from sim_app.json in the working directory (the edge's state folder), written
#    by the simulator before every boot: the leaf config has no room for app settings.
# 2. Every publish prints one line `edge: app pub IDX SEQ FWD` (one write: a SIGKILL never leaves half a
#    line), so the simulator knows exactly what was published even when the process is killed; FWD is
#    1 when the uplink took the message at once (it had a link and the hub had interest).
# 3. A telemetry payload starts `NAME BOOT IDX SEQ `: the simulator matches what the hub delivers to
#    what was published, per boot (sequence numbers restart at 1 with every process).
# 4. The stop command (`sim.ctl.NAME`) ends publishing and is answered on the same hub link as the
#    telemetry: when its reply reaches the simulator, every earlier forwarded message has too.

import asyncio
import json
import sys

from edge.compat import ticks_add, ticks_diff, ticks_ms
from edge.leaf.broker import LeafError

PARAMS = "sim_app.json"


def _log(s):
    sys.stdout.write("edge: app " + s + "\n")


class _App:
    def __init__(self, leaf, p):
        self.leaf = leaf
        self.name = p["name"]
        self.boot = p["boot"]
        self.running = True
        self.last = [0] * len(p["publish"])
        self.served = 0

    def on_request(self, msg):
        self.served += 1
        msg.respond(self.name + " " + str(self.boot) + " " + str(self.served))

    def on_control(self, msg):
        if msg.data == b"stop":
            self.running = False
            seqs = " ".join([str(s) for s in self.last])
            _log("stopped " + seqs)
            if msg.reply:
                msg.respond("stopped " + str(self.boot) + " " + seqs)

    async def publisher(self, idx, subject, interval_ms, pad):
        leaf = self.leaf
        head = self.name + " " + str(self.boot) + " " + str(idx) + " "
        seq = 0
        due = ticks_ms()
        while True:
            wait = ticks_diff(due, ticks_ms())
            if wait > 0:
                await asyncio.sleep(wait / 1000)
            if not self.running:
                return
            due = ticks_add(due, interval_ms)
            seq += 1
            up = leaf.uplink
            before = up.forwarded if up is not None else 0
            try:
                leaf.publish(subject, head + str(seq) + " " + pad)
            except LeafError as e:
                _log("pub-error " + str(idx) + " " + str(seq) + " " + str(e))
                continue
            fwd = 1 if up is not None and up.forwarded > before else 0
            self.last[idx] = seq
            _log("pub " + str(idx) + " " + str(seq) + " " + str(fwd))


async def main(leaf):
    with open(PARAMS) as f:
        p = json.loads(f.read())
    app = _App(leaf, p)
    if p.get("service"):
        leaf.subscribe(p["service"], app.on_request)
    leaf.subscribe(p["control"], app.on_control)
    tasks = []
    for idx, pub in enumerate(p["publish"]):
        pad = "x" * pub["size"]
        tasks.append(asyncio.create_task(app.publisher(idx, pub["subject"], pub["interval_ms"], pad)))
    _log("started boot=" + str(app.boot) + " publishers=" + str(len(tasks)))
    for t in tasks:
        await t

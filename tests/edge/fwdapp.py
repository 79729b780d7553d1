# tests/edge/fwdapp.py — the device code of the store-and-forward tests (the config's "app", on MicroPython).
#
# Parameters come from fwdapp.json in the working directory, written by the test before every boot:
#   subjects  list; record i goes to subjects[i % len]
#   count     records to publish (0: until killed)
#   start     first index;  tag: the payload's prefix (one per boot)
#   size      payload bytes;  batch: durable publishes started before awaiting them (group commit)
#   wait_file publish only once this file exists in the working directory (the test says when)
#   pause_ms  pause after each batch;  mode: "durable" (await leaf.publish(..., durable=True)) or "plain"
#             (leaf.publish(): returns once on flash)
# Every confirmed record prints `edge: app ack IDX SEQ TAG` only after the publish returned, in one write (a SIGKILL
# never leaves half a line); a refused one prints `edge: app err IDX NAME: TEXT`; the end prints `edge: app done N`.

import asyncio
import json
import sys


def _out(s):
    sys.stdout.write("edge: app " + s + "\n")


async def main(leaf):
    with open("fwdapp.json") as f:
        p = json.load(f)
    subjects = p["subjects"]
    count = p.get("count", 0)
    i = p.get("start", 0)
    end = i + count if count else -1
    size = p.get("size", 32)
    batch = p.get("batch", 1)
    pause = p.get("pause_ms", 0) / 1000
    durable = p.get("mode", "durable") == "durable"
    tag = p.get("tag", "t")
    acked = 0
    wait = p.get("wait_file")
    while wait:
        try:
            open(wait).close()
            break
        except OSError:
            await asyncio.sleep(0.02)
    while i != end:
        started = []
        for _ in range(batch):
            if i == end:
                break
            data = f"{tag} {i} ".encode()
            data += b"x" * max(0, size - len(data))
            try:
                w = leaf.publish(subjects[i % len(subjects)], data, durable=durable)
                started.append((i, w))
            except Exception as e:
                _out(f"err {i} {type(e).__name__}: {e}")
            i += 1
        for idx, w in started:
            try:
                seq = (await w) if durable else 0
                acked += 1
                _out(f"ack {idx} {seq} {tag}")
            except Exception as e:
                _out(f"err {idx} {type(e).__name__}: {e}")
        await asyncio.sleep(pause)
    _out(f"done {acked}")

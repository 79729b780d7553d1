# tests/edge/microapp.py — the device code of the NATS Micro tests (tests/edge/test_micro.py), run by an edge with
# `"app": "microapp"` on MicroPython (also frozen into the 32-bit build) and CPython.
#
# One service "calc" 1.2.3, metadata {"edge": <edge name>}:
#   echo        -> the request's data (returned by the handler)
#   who         -> the edge's name (queue group "q": one edge of several answers)
#   math.fail   -> ServiceError(418, "teapot")           (group "math", queue group "mq")
#   math.boom   -> ValueError("kaput"), an unhandled exception: code 500
#   slow        -> an async handler that answers with msg.respond() after yielding
# and a plain subscription microctl.<edge name>: "stop" stops the service (answers "stopped"),
# "heap" answers "<gc.mem_alloc() after a collect>".
# It prints `edge: micro ready id=<service id>` once the service exists.

import asyncio
import gc
import sys

from edge.micro.service import ServiceError


def _teapot(msg):
    raise ServiceError(418, "teapot")


def _kaput(msg):
    raise ValueError("kaput")


async def _slow(msg):
    await asyncio.sleep(0)
    msg.respond(b"slow:" + msg.data)


async def main(leaf):
    name = leaf.name
    svc = leaf.service("calc", "1.2.3", description="edge calculator", metadata={"edge": name})
    svc.endpoint("echo", lambda msg: msg.data, metadata={"kind": "echo"})
    svc.endpoint("who", lambda msg: name)
    svc.endpoint("slow", _slow)
    math = svc.group("math", queue="mq")
    math.endpoint("fail", _teapot)
    math.endpoint("boom", _kaput)

    def ctl(msg):
        if msg.data == b"stop":
            svc.stop()
            return msg.respond(b"stopped")
        gc.collect()
        msg.respond(str(gc.mem_alloc() if hasattr(gc, "mem_alloc") else -1))

    leaf.subscribe("microctl." + name, ctl)
    sys.stdout.write("edge: micro ready id=" + svc.id + "\n")
    while True:
        await asyncio.sleep(3600)

# tests/sim/echoapp.py — the app of the pytest plugin's own tests (tests/sim/test_pytest_plugin.py), run by the
# fleet's MicroPython edges. It answers requests on svc.<name> with "<name> <greeting> <data>" (the greeting from
# greeting.json in its working directory, a file the test gives each edge), prints `echo: served <data>` for each,
# and publishes tick.<name> every 100 ms.

import asyncio
import json
import sys


def _greeting():
    try:
        with open("greeting.json") as f:
            return json.load(f)["text"]
    except OSError:
        return "hi"


async def main(leaf):
    greeting = _greeting()

    def serve(msg):
        data = msg.data.decode()
        msg.respond(leaf.name + " " + greeting + " " + data)
        sys.stdout.write("echo: served " + data + "\n")

    leaf.subscribe("svc." + leaf.name, serve)
    n = 0
    while True:
        n += 1
        leaf.publish("tick." + leaf.name, str(n))
        await asyncio.sleep(0.1)

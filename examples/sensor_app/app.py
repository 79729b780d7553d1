# A small sensor app for a natsedge edge (its config's "app"; docs/edge.md). Every 100 ms it reads the temperature
# and publishes the reading on sensors.<edge name>.temp. The edge's store-and-forward queue (config "forward",
# docs/forward.md) takes that subject: `await leaf.publish(..., durable=True)` returns once the reading is on flash,
# and the queue sends it on into a hub stream whenever the network is up. So a reading the app saw stored survives
# a network outage and a power cut.
#
# Runs on MicroPython (an ESP32, the unix port in tests) and CPython. Each stored reading prints one line
# `sensor: stored BOOT N`, in one write (a power cut never leaves half a line): the test reads these.

import asyncio
import json
import os
import sys

INTERVAL_S = 0.1
BOOTS = "boots.txt"  # in the working directory: the board's flash, the edge's state folder in tests


def next_boot():
    # The boot number, counted on flash: readings are (boot, n), n restarting at 1 with every boot.
    try:
        with open(BOOTS) as f:
            boot = int(f.read())
    except (OSError, ValueError):
        boot = 0
    boot += 1
    with open(BOOTS + ".new", "w") as f:
        f.write(str(boot))
    os.rename(BOOTS + ".new", BOOTS)  # atomic: a power cut leaves the old number or the new one
    return boot


def read_celsius(n):
    # On a board: an ADC or an I2C sensor. Here: a slow saw-tooth around 21 °C.
    return 20.0 + (n % 20) / 10


async def main(leaf):
    boot = next_boot()
    subject = "sensors." + leaf.name + ".temp"
    n = 0
    while True:
        n += 1
        reading = {"edge": leaf.name, "boot": boot, "n": n, "celsius": read_celsius(n)}
        try:
            await leaf.publish(subject, json.dumps(reading), durable=True)
            sys.stdout.write(f"sensor: stored {boot} {n}\n")
        except Exception as e:  # the queue is full (policy "reject") or the flash failed: say so, carry on
            sys.stdout.write(f"sensor: not stored {boot} {n} {repr(e)}\n")
        await asyncio.sleep(INTERVAL_S)

"""app.py on a simulated fleet: a hub with JetStream and 3 MicroPython edges running the app, one edge cut off from
the network, one losing power; every reading an edge stored must reach the hub's stream, once.

Needs `pip install 'natsedge[sim]' pytest`; the fixtures come from natsedge's pytest plugin (docs/testing.md).
"""

import re

from sim.testing import wait_until

# every edge's config, over what the fleet sets (name, hub.url, data, app): the store-and-forward queue
CONFIG = {
    "forward": [{"subjects": ["sensors.>"], "stream": "SENSORS"}],
    "forward_settings": {"jitter": 0},  # send at once when the link comes back (a real fleet spreads it out)
}
STORED = re.compile(r"^sensor: stored (\d+) (\d+)$")


def stored(edge):
    """(edge, boot, n) of every reading the app saw stored on the edge's flash."""
    return {(edge.name, int(m[1]), int(m[2])) for m in map(STORED.match, edge.lines) if m}


def reading(msg):
    r = msg.json()
    return r["edge"], r["boot"], r["n"]


def test_every_stored_reading_reaches_the_hub_once(natsedge_hub, natsedge_fleet):
    natsedge_hub.add_stream("SENSORS", "sensors.>")
    arrived = natsedge_hub.collect("sensors.>")  # what the hub delivers, as it comes
    fleet = natsedge_fleet("app", edges=3, config=CONFIG)  # app.py, next to this file; returns once all are linked

    def at_hub():
        return {reading(m) for m in arrived}

    # edge-1 loses its network (a dead path: nothing moves, nothing is closed); its readings wait on its flash
    fleet.partition(1)
    wait_until(lambda: not fleet[1].link_up, timeout=10, what="edge-1 to notice")  # 2 pings unanswered: 2-3 s
    wait_until(lambda: len(stored(fleet[1]) - at_hub()) >= 10, timeout=15, what="10 readings held on edge-1")

    # edge-2 loses power and boots again with the same flash
    fleet.crash(2)
    fleet[2].wait_for_line(r"^sensor: stored 2 ", timeout=15)  # its second boot stores readings
    assert fleet[2].boots == 2

    fleet.heal(1)
    fleet.wait_up()

    # Every reading stored by now reaches the hub, nothing lost across the outage or the power cut ...
    expected = set().union(*(stored(edge) for edge in fleet))
    wait_until(lambda: expected <= at_hub(), timeout=20, what="every stored reading at the hub")
    # ... and the stream holds each once
    in_stream = [reading(m) for m in natsedge_hub.stream_messages("SENSORS")]
    assert expected <= set(in_stream)
    assert len(in_stream) == len(set(in_stream)), "a reading was stored twice"
    assert {name for name, _, _ in in_stream} == {"edge-0", "edge-1", "edge-2"}

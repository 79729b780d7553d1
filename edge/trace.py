# Message tracing (NATS 2.11, ADR-41): the names and numbers every server on a traced path shares.
# The hub (host/) and the edge broker both import these, so an event from either reads the same; the
# event itself is built where the path is (host/msgtrace.py, edge/leaf/).
# Runs on MicroPython and CPython.

DEST = "Nats-Trace-Dest"  # header: the subject the events go to
ONLY = "Nats-Trace-Only"  # header: trace, do not deliver to clients
HOP = "Nats-Trace-Hop"  # header: which hop of the trace a forwarded copy is ("1", "2", "1.1")
ORIGIN_ACCOUNT = "Nats-Trace-Origin-Account"  # header of pre-release servers: tracing is switched off
DISABLED = "trace disabled"  # the DEST value that switches tracing off downstream

# The server-to-server protocol level that understands tracing (nats-server server.go MsgTraceProto): a hub's leaf
# INFO "proto", a leaf's CONNECT "protocol".
PROTO = 3

# Connection kinds in events (nats-server client.go) that the edge writes; the others are host/msgtrace.py's.
CLIENT = 0
LEAF = 4

# Event types the edge writes (the hub's others: host/msgtrace.py).
INGRESS = "in"
JETSTREAM_EVENT = "js"
EGRESS = "eg"

# Egress errors, as nats-server words them (those only the hub meets: host/msgtrace.py).
NOT_DELIVERED = "Not delivered because "
NO_SUPPORT = NOT_DELIVERED + "remote does not support message tracing"
NO_ECHO = NOT_DELIVERED + "of no echo"
# Delivered to a link whose peer does not trace (proto < 3): no event will come from its server.
DELIVERED_NO_SUPPORT = ("Message delivered but remote does not support message tracing so no trace event "
                        "generated from there")


def is_only(value):
    # Nats-Trace-Only's value: "true", "1" or "on" (any case) means trace without delivering.
    return value is not None and value.lower() in ("true", "1", "on")


def next_hop(incoming, n):
    # The Nats-Trace-Hop of this server's n-th forwarded copy (n from 1): "<n>" at the origin, else
    # "<incoming>.<n>".
    return str(n) if not incoming else incoming + "." + str(n)

"""A traced message across a gateway, on every side (tests/gateway/harness.py): the origin server's event has one
hop and a GATEWAY egress naming the remote server; the remote server's event a GATEWAY ingress and the queue
delivery (shared/nats-reference/more/README.md §C "Gateway hop", trace_gw_results.txt); each server's cluster is its
gateway's name. The delivered copy carries Nats-Trace-Hop."""

from __future__ import annotations

from edge import trace as names
from host import msgtrace
from tests.cluster.harness import next_msg, warm_up
from tests.trace.harness import by_server, traced_pub, wait_events


def test_traced_message_across_a_gateway(super_cluster):
    sc = super_cluster()
    a, b = sc.a[0], sc.b[0]
    sub = b.client(name=None)
    tracer = a.client(name=None)
    try:
        sub.send(b"SUB tr.x qq 1\r\nSUB tr.warm 2\r\n")
        tracer.send(b"SUB trace.> 1\r\n")
        warm_up(tracer, "tr.warm", [sub])
        warm_up(sub, "trace.probe", [tracer])  # B's event can come back to A
        tracer.send(traced_pub("tr.x", "trace.gw", b"hi"))
        got = by_server(wait_events(tracer, 2, "trace.gw"))
        assert set(got) == {"a1", "b1"}
        assert got["a1"]["server"]["cluster"] == "A" and got["b1"]["server"]["cluster"] == "B"
        assert got["a1"]["hops"] == 1
        assert got["a1"]["events"] == [
            {"type": "in", "kind": names.CLIENT, "acc": "$G", "subj": "tr.x"},
            {"type": "eg", "kind": msgtrace.GATEWAY, "name": "b1", "hop": "1"},
        ]
        assert "hops" not in got["b1"]
        assert got["b1"]["request"]["header"]["Nats-Trace-Hop"] == ["1"]
        assert got["b1"]["events"] == [
            {"type": "in", "kind": msgtrace.GATEWAY, "name": "a1", "acc": "$G", "subj": "tr.x"},
            {"type": "eg", "kind": names.CLIENT, "sub": "tr.x", "queue": "qq"},
        ]
        m = next_msg(sub)
        while m.subject != "tr.x":
            m = next_msg(sub)
        assert m.hdr == b"NATS/1.0\r\nNats-Trace-Dest: trace.gw\r\nNats-Trace-Hop: 1\r\n\r\n" and m.payload == b"hi"
    finally:
        sub.close()
        tracer.close()

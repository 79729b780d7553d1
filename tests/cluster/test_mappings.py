"""Subject mappings in a cluster: the server a message comes in at maps it, routes carry the mapped subject and the
server at the other end does not map it again (nats-server maps client and leaf publishes only). Two nodes of each
side, mixed pairs included, both with the same mappings."""

from __future__ import annotations

import pytest

from tests.compat.harness import pub

from .harness import Cluster, pair_kinds, read_until, warm_up

# `RT.*` is itself a source: a message mapped to RT.x on one server must not become again.x on the other.
MAPPINGS = 'mappings { "rt.*": "RT.$1", "RT.*": "again.$1" }'


@pytest.fixture
def pair(side, tmp_path, request):
    c = Cluster(side, 2, tmp_path, extra_conf=MAPPINGS, kinds=pair_kinds(side))
    request.addfinalizer(c.stop)
    return c.start()


def test_routes_carry_the_mapped_subject(pair):
    n1, n2 = pair[0], pair[1]
    for here, there in ((n1, n2), (n2, n1)):
        with here.client() as p, there.client() as s:
            s.send(b"SUB RT.* 1\r\nSUB again.* 2\r\nSUB rt.* 3\r\nSUB end 4\r\nSUB done 5\r\n")
            warm_up(p, "end", [s])
            p.send(pub("rt.a", b"1") + pub("rt.b", b"2") + pub("done", b"x"))
            got = [m for m in read_until(s, "done") if m.subject != "end"]  # (late warm-ups left out)
            assert [(m.subject, m.sid, m.payload) for m in got] == [("RT.a", "1", b"1"), ("RT.b", "1", b"2")]

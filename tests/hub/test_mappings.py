"""Subject mappings (`mappings {}` at the top level and in accounts) on nats-server and the hub, with raw sockets:
every mapping function, weighted and dropped shares, per-account mappings, a leaf's publish (the mapping's source is
advertised to leafs), request/reply through a mapping, a traced message's `sm` event, and config errors as
`nats-server -t` reports them."""

from __future__ import annotations

import subprocess
from collections import Counter

import pytest

from host import jwt as hubjwt
from host.opts import OptionsError, load_config
from tests.compat.harness import Server, free_port, hpub, nats_server_binary, pub, read_msg, selected_sides
from tests.hub.test_delivery import _leaf_link
from tests.jwtmint import Operator
from tests.security.test_jwt import sig
from tests.trace.harness import event_of, normal, trace_headers

SIDES = selected_sides()

# (source, destination, published, what a subscriber sees); the expected subjects are nats-server 2.15.1's.
FUNCTIONS = [
    ("lit", "lit.mapped", "lit", "lit.mapped"),
    ("one.*", "One.$1", "one.x", "One.x"),
    ("swap.*.*", "Swap.$2.$1", "swap.a.b", "Swap.b.a"),
    ("mus.*.*", "Mus.{{wildcard(2)}}.{{ Wildcard(1) }}", "mus.a.b", "Mus.b.a"),
    ("zero.*", "Zero.$0", "zero.q", "Zero.zero"),
    ("fw.*.>", "Fw.$1.>", "fw.a.b.c", "Fw.a.b.c"),
    ("left.*", "Left.{{left(1,2)}}.{{right(1,2)}}", "left.abcdef", "Left.ab.ef"),
    ("short.*", "Short.{{left(1,2)}}.{{right(1,2)}}", "short.a", "Short.a.a"),
    ("slice.*", "Slice.{{SliceFromLeft(1,2)}}.X.{{sliceFromRight(1,2)}}", "slice.abcde", "Slice.ab.cd.e.X.a.bc.de"),
    ("split.*", "Split.{{split(1,-)}}.{{splitFromLeft(1,1)}}.{{splitFromRight(1,1)}}", "split.-a--b-c-",
     "Split.a.b.c.-.a--b-c-.-a--b-c.-"),
    ("part.*.*", "Part.{{partition(5,1,2)}}.{{partition(7)}}.$2", "part.x.y", "Part.2.0.y"),
]

WEIGHTS_CONF = """mappings {
  "w.half": [ { destination: "w.b", weight: 50% }, { destination: "w.c", weight: "50%" } ]
  "w.all": [ { destination: "w.to", weight: 100 } ]
  "w.rest": { destination: "w.part", weight: 30 }
  "w.drop": [ { destination: "w.drop", weight: 20% }, { destination: "w.kept", weight: 30% } ]
  "w.mine": [ { destination: "w.here", weight: 100, cluster: "other" } ]
}
"""


@pytest.fixture(params=SIDES)
def start(request, tmp_path):
    """Start a server of the parametrized side with a config (stopped by PID at the end of the test)."""

    def run(config: str) -> Server:
        srv = Server(request.param, config=config, workdir=tmp_path)
        request.addfinalizer(srv.stop)
        return srv.start()

    return run


def _published(srv: Server, subjects: list[str], sub: str = ">", **connect) -> list[str]:
    """The subjects a subscriber to `sub` sees for one publish to each of `subjects`, in order."""
    with srv.client(**connect) as s, srv.client(**connect) as p:
        s.send(f"SUB {sub} 1\r\n".encode())
        s.sync()
        p.send(b"".join(pub(subj, b"x") for subj in subjects))
        p.sync()
        got: list[str] = []
        while len(got) < len(subjects):
            got += [m.subject for m in s.msgs_until_pong()]
        return got


def test_every_mapping_function(start):
    srv = start("mappings {\n" + "".join(f'  "{src}": "{dest}"\n' for src, dest, _p, _e in FUNCTIONS) + "}\n")
    assert _published(srv, [p for _s, _d, p, _e in FUNCTIONS]) == [e for _s, _d, _p, e in FUNCTIONS]


def test_random_picks_a_number_below_its_argument_per_message(start):
    srv = start('mappings { "rnd.*": "R.{{random(3)}}.$1" }\n')
    got = Counter(_published(srv, ["rnd.x"] * 60))
    assert set(got) <= {"R.0.x", "R.1.x", "R.2.x"} and len(got) > 1, got


def test_partition_of_a_literal_source_matched_first_hashes_nothing(start):
    # nats-server's quirk, kept: it splits the subject into tokens only for a wildcard source or after a mapping that
    # did not match, so the first mapping, literal and matching, partitions an empty key (fnv32a("") % 5 == 1)
    srv = start('mappings { "partlit": "Part.{{partition(5)}}" }\n')
    assert _published(srv, ["partlit", "partlit"]) == ["Part.1", "Part.1"]


def test_maps_alias_and_a_later_entry_replacing_an_earlier_one(start):
    srv = start('maps { "a": "first", "a": "second" }\n')
    assert _published(srv, ["a"]) == ["second"]


def test_weights(start):
    srv = start(WEIGHTS_CONF)
    n = 400
    subjects = ["w.half"] * n + ["w.all"] * 50 + ["w.rest"] * n + ["w.mine"] * 10
    got = Counter(_published(srv, subjects))
    # statistical: each share has an expected 200 (50%) or 120/280 (30%/70%) of 400; the bounds are 10 standard
    # deviations wide
    assert 100 < got["w.b"] < 300 and got["w.b"] + got["w.c"] == n, got
    assert got["w.to"] == 50 and "w.all" not in got
    assert 40 < got["w.part"] < 220 and got["w.part"] + got["w.rest"] == n, got
    assert got["w.mine"] == 10 and "w.here" not in got  # scoped to a cluster this server is not in
    # the source listed as a destination: the 50% no destination takes is dropped
    with srv.client() as s, srv.client() as p:
        s.send(b"SUB w.> 1\r\n")
        s.sync()
        p.send(b"".join(pub("w.drop", b"%d" % k) for k in range(n)) + pub("w.end", b"end"))
        p.sync()
        msgs = []
        while not msgs or msgs[-1].subject != "w.end":
            msgs += s.msgs_until_pong()
    kinds = Counter(m.subject for m in msgs[:-1])
    assert set(kinds) <= {"w.drop", "w.kept"} and 100 < sum(kinds.values()) < 300, kinds
    assert kinds["w.drop"] > 0 and kinds["w.kept"] > 0, kinds


def test_mapped_publishes_before_and_after_interest_in_their_destination(start):
    # The hub's parser delivers runs on its own once it has a plan for a subject, and skips frames to subjects known
    # to have no interest: neither may skip the mapping (a plan for a source is its destination's; a source is never
    # "no interest", even when the share of the weights that maps it onto itself found nobody).
    srv = start('mappings { "m.fixed": "m.to", "m.rest": { destination: "m.part", weight: 50 } }\n')
    with srv.client() as p:
        for _ in range(3):  # nobody listens yet
            p.send(pub("m.fixed", b"0") + pub("m.rest", b"0"))
            p.sync()
        with srv.client() as s:
            s.send(b"SUB m.to 1\r\nSUB m.part 2\r\n")  # (m.rest itself has no interest)
            s.sync()
            for k in range(20):  # one read each: the later ones find a plan
                p.send(pub("m.fixed", b"%d" % k))
                p.sync()
            for _ in range(200):
                p.send(pub("m.rest", b"r"))
                p.sync()
            p.send(pub("m.to", b"end"))
            p.sync()
            got: list[str] = []
            while not got or got[-1] != "m.to" or len(got) < 21:
                got += [m.subject for m in s.msgs_until_pong()]
    kinds = Counter(got)
    assert kinds["m.to"] == 21
    assert 50 < kinds["m.part"] < 150, kinds  # an expected 100 of 200: 7 standard deviations either side


def test_verbose_client_publishing_to_a_source(start):
    srv = start('mappings { "v.*": "V.$1", "gone": [ { destination: "gone", weight: 0 } ] }\n')
    with srv.client() as s, srv.client(verbose=True, pedantic=True) as p:
        s.send(b"SUB > 1\r\n")
        s.sync()
        p.send(pub("v.a", b"1") + pub("gone", b"2") + b"PING\r\n")
        p.expect(rb"\+OK\r\n\+OK\r\nPONG\r\n")  # the dropped one is acknowledged too
        assert [(m.subject, m.payload) for m in s.msgs_until_pong()] == [("V.a", b"1")]


def test_per_account_mappings(start):
    srv = start("""mappings { "g": "g.global" }
accounts {
  A { users: [ { user: a, password: a } ], mappings { "x.*": "a.$1" } }
  B { users: [ { user: b, password: b } ] }
}
""")
    assert _published(srv, ["x.1", "g"], user="a", **{"pass": "a"}) == ["a.1", "g"]
    assert _published(srv, ["x.1", "g"], user="b", **{"pass": "b"}) == ["x.1", "g"]


def test_permissions_apply_to_the_mapped_subject(start):
    srv = start("""mappings { "in.*": "out.$1" }
authorization { users: [
  { user: u, password: p, permissions: { publish: ["in.>", "trace.>"] } }, { user: s, password: s } ] }
""")
    with srv.client(user="s", **{"pass": "s"}) as s, srv.client(user="u", **{"pass": "p"}) as p:
        s.send(b"SUB > 1\r\n")
        s.sync()
        p.send(pub("in.x", b"x"))
        p.expect_err('Permissions Violation for Publish to "out.x"')
        assert s.msgs_until_pong() == []
        # traced, the refused message's event has the ingress with its error, then the mapping
        p.send(hpub("in.y", trace_headers("trace.p"), b"y"))
        p.expect_err('Permissions Violation for Publish to "out.y"')
        event = normal(event_of(read_msg(s)))
        assert [(e["type"], e.get("subj"), e.get("to"), e.get("error")) for e in event["events"]] == [
            ("in", "in.y", None, 'Permissions Violation for Publish to "out.y"'), ("sm", None, "out.y", None)]


def test_request_reply_through_a_mapping(start):
    srv = start('mappings { "svc.*": "worker.$1" }\n')
    with srv.client() as responder, srv.client() as requester:
        responder.send(b"SUB worker.* 1\r\n")
        responder.sync()
        requester.send(b"SUB _INBOX.r 9\r\n" + pub("svc.add", b"1+1", reply="_INBOX.r"))
        req = read_msg(responder)
        assert (req.subject, req.reply, req.payload) == ("worker.add", "_INBOX.r", b"1+1")
        responder.send(pub(req.reply, b"2"))
        rep = read_msg(requester)
        assert (rep.subject, rep.payload) == ("_INBOX.r", b"2")


def test_a_leaf_publish_to_a_source_is_mapped(start):
    port = free_port()
    srv = start(f'leafnodes {{ listen: 127.0.0.1:{port} }}\nmappings {{ "leaf.*": "hub.$1" }}\n')
    with srv.client() as s:
        s.send(b"SUB hub.* 1\r\n")
        s.sync()
        # the source is advertised to the leaf (nothing subscribes to leaf.* itself), so its clients' publishes come
        link = _leaf_link(port, {b"leaf.*", b"hub.*"})
        try:
            link.sendall(b"LMSG leaf.a 2\r\nl1\r\nLMSG leaf.b | q 2\r\nl2\r\n"
                         b"HMSG leaf.c 12 14\r\nNATS/1.0\r\n\r\nl3\r\n")
            got = []
            while len(got) < 3:
                got += s.msgs_until_pong()
            assert [(m.subject, m.payload) for m in got] == [("hub.a", b"l1"), ("hub.b", b"l2"), ("hub.c", b"l3")]
        finally:
            link.close()


def _traced_through_mapping(srv: Server) -> list[dict]:
    with srv.client(name="tracer") as c:
        c.send(b"SUB trace.x 1\r\nSUB new.* 2\r\n")
        c.sync()
        c.send(hpub("old.a", trace_headers("trace.x"), b"t"))
        msgs = [read_msg(c), read_msg(c)]
    delivered = [m for m in msgs if m.subject != "trace.x"]
    assert [(m.subject, m.payload) for m in delivered] == [("new.a", b"t")]
    return [normal(event_of(m)) for m in msgs if m.subject == "trace.x"]


def test_a_traced_message_gets_the_same_sm_event_on_both_servers(tmp_path, request):
    conf = 'server_name: mapper\nmappings { "old.*": "new.$1" }\n'
    events = {}
    for side in SIDES:
        (tmp_path / side).mkdir()
        srv = Server(side, config=conf, workdir=tmp_path / side)
        request.addfinalizer(srv.stop)
        events[side] = _traced_through_mapping(srv.start())
        srv.stop()
    for got in events.values():
        assert [e["type"] for e in got[0]["events"]] == ["in", "sm", "eg"]
        assert got[0]["events"][0]["subj"] == "old.a"
        assert got[0]["events"][1] == {"type": "sm", "to": "new.a"}
        assert got[0]["events"][2]["sub"] == "new.*"
    assert len({repr(e) for e in events.values()}) == 1, events


def test_a_traced_message_the_weights_drop_still_gets_its_event(start):
    srv = start('mappings { "loss": [ { destination: "loss", weight: 0 } ] }\n')
    with srv.client() as c:
        c.send(b"SUB trace.x 1\r\nSUB loss 2\r\n")
        c.sync()
        c.send(hpub("loss", trace_headers("trace.x"), b"t"))
        event = normal(event_of(read_msg(c)))
        assert [(e["type"], e.get("subj"), e.get("to")) for e in event["events"]] == [
            ("in", "loss", None), ("sm", None, "")]
        assert c.msgs_until_pong() == []


# -- config errors: the texts nats-server -t prints

@pytest.mark.parametrize("body,error", [
    ('mappings { "a.*": "b.{{foo(1)}}" }',
     'Error adding mapping for "a.*" to "b.{{foo(1)}}" : invalid mapping destination: unknown function in {{foo(1)}}'),
    ('mappings { "a.*": "b.$2" }', 'Error adding mapping for "a.*" to "b.$2" : invalid mapping destination: '
     "wildcard index out of range in $2: [2]"),
    ('mappings { "a": "b.$1" }',
     'Error adding mapping for "a" to "b.$1" : invalid mapping destination: wildcard index out of range in $1'),
    ('mappings { "a.*": "b.*" }', 'Error adding mapping for "a.*" to "b.*" : invalid subject'),
    ('mappings { "a.>": "b" }', 'Error adding mapping for "a.>" to "b" : invalid subject'),
    ('mappings { "a..b": "b" }', 'Subject "a..b" is not a valid subject'),
    ('mappings { "a.*": "b c" }',
     'Error adding mapping for "a.*" to "b c" : invalid mapping destination: invalid transform'),
    ('accounts { A { mappings { "a.*": "b.{{wildcard()}}" } } }', 'Error adding mapping for "a.*" to '
     '"b.{{wildcard()}}" : invalid mapping destination: not enough arguments passed to the function in '
     "{{wildcard()}}"),
    ('mappings { "a.*": "b.{{wildcard(1,2)}}" }', "too many arguments passed to the function in {{wildcard(1,2)}}"),
    ('mappings { "a.*": "b.{{partition(3,2)}}" }', "wildcard index out of range in {{partition(3,2)}}: [2]"),
    ('mappings { "a.*": "b.{{split(1)}}" }', "not enough arguments passed to the function in {{split(1)}}"),
    ('mappings { "a.*": "b.{{splitfromleft(1,x)}}" }',
     "function argument is invalid or in the wrong format in {{splitfromleft(1,x)}}"),
    ('mappings { "a": [{destination: b, weight: 60}, {destination: c, weight: 50}] }',
     'Error adding mapping for "a" : total weight needs to be <= 100'),
    ('mappings { "a.*": [{destination: "b.$1", weight: 50, cluster: c1}, {destination: "c.$1", weight: 60, '
     "cluster: c1}] }", 'Error adding mapping for "a.*" : total weight needs to be <= 100'),
    ('mappings { "a": [{destination: b, weight: 101}] }', "Invalid weight 101 for mapping destination"),
    ('mappings { "a": [{destination: b, weight: "x%"}] }', 'Invalid weight "x" for mapping destination'),
    ('mappings { "a": [{destination: b}] }', 'Missing weight for mapping destination "b"'),
    ('mappings { "a": [{destination: b, weight: 20, foo: 1}] }', 'Unknown field "foo" for mapping destination'),
    ('mappings { "a": [{destination: b, weight: 20}, {destination: b, weight: 20}] }',
     'Error adding mapping for "a" : duplicate entry for "b"'),
    ('mappings { "a": 5 }', "Expected an entry for the mapping destination"),
    ('mappings { "a": [{destination: 5, weight: 50}] }', "interface conversion: interface {} is int64, not string"),
    ("mappings: 5", "interface conversion: interface {} is int64, not map[string]interface {}"),
])
def test_bad_mappings_are_refused_as_nats_server_refuses_them(tmp_path, body, error):
    path = tmp_path / "server.conf"
    path.write_text(body + "\n")
    with pytest.raises(OptionsError) as e:
        load_config(str(path))
    assert error in str(e.value) and "\n" not in str(e.value)
    p = subprocess.run([nats_server_binary(), "-t", "-c", str(path)], capture_output=True, text=True, timeout=10)
    assert p.returncode != 0 and error in p.stdout + p.stderr


def test_a_weighted_destination_without_a_subject_is_refused(tmp_path):
    # nats-server takes it (-t says valid) and crashes on the first message to the source: refused here, in one line
    path = tmp_path / "server.conf"
    path.write_text('mappings { "a": [{weight: 50}] }\n')
    with pytest.raises(OptionsError) as e:
        load_config(str(path))
    assert 'Missing destination for the mapping of "a"' in str(e.value)


@pytest.mark.parametrize("body", [
    'mappings { "a.*": "b.{{left(1,2)}}.{{right(1,3)}}.{{random(3)}}" }',
    'maps { "a": { destination: b, weight: 20 } }',
    'mappings { "a.*": [{destination: "b.$1", weight: 50, cluster: c1}, {destination: "c.$1", weight: 60}] }',
])
def test_good_mappings_are_taken_by_both(tmp_path, body):
    path = tmp_path / "server.conf"
    path.write_text(body + "\n")
    load_config(str(path))
    p = subprocess.run([nats_server_binary(), "-t", "-c", str(path)], capture_output=True, text=True, timeout=10)
    assert p.returncode == 0, p.stdout + p.stderr


@pytest.fixture(params=SIDES)
def monitored(request, tmp_path):
    srv = Server(request.param, monitor=True, workdir=tmp_path, config="""mappings {
  "a": "b"
  "w": [ { destination: x, weight: 30 } ]
  "c.*": [ { destination: "d.$1", weight: 40, cluster: c1 } ]
}
""")
    request.addfinalizer(srv.stop)
    return srv.start()


def test_accountz_lists_the_mappings_with_cumulative_weights(monitored):
    detail = monitored.http_get("/accountz?acc=$G")["account_detail"]
    assert detail["mappings"] == {
        "a": [{"subject": "b", "weight": 100}],
        "c.*": [{"subject": "c.$1", "weight": 100}, {"subject": "d.$1", "weight": 40, "cluster": "c1"},
                {"subject": "c.$1", "weight": 100, "cluster": "c1"}],
        "w": [{"subject": "x", "weight": 30}, {"subject": "w", "weight": 100}],
    }
    assert list(detail).index("mappings") == list(detail).index("subscriptions") + 1


def test_account_jwt_mappings(start):
    op = Operator()
    acc = op.account("M", mappings={
        "jm.*": [{"subject": "JM.$1"}],  # no weight: 100
        "half": [{"subject": "half.a", "weight": 50}, {"subject": "half.b", "weight": 50}],
        "bad.*": [{"subject": "x.{{foo(1)}}"}],  # nats-server cannot add it: left out
    })
    user = acc.user("u")
    srv = start(op.server_conf([acc]))
    with srv.raw() as s, srv.raw() as p:
        for r in (s, p):
            r.handshake(jwt=user.jwt, sig=sig(user.key, r.info["nonce"]))
        s.send(b"SUB > 1\r\n")
        s.sync()
        p.send(pub("jm.a", b"1") + b"".join(pub("half", b"h") for _ in range(200)) + pub("bad.q", b"2"))
        p.sync()
        got: list[str] = []
        while len(got) < 202:
            got += [m.subject for m in s.msgs_until_pong()]
    kinds = Counter(got)
    assert got[0] == "JM.a" and got[-1] == "bad.q"
    assert kinds["half.a"] + kinds["half.b"] == 200 and 50 < kinds["half.a"] < 150, kinds


@pytest.mark.parametrize("mappings,error", [
    ({"a": [{"subject": "b", "weight": 150}]}, 'Mapping "a" has a weight 150 that exceeds 100'),
    ({"a": [{"subject": "b", "weight": 60}, {"subject": "c"}]},
     'Mapping "a" exceeds 100% among all of it\'s weighted to mappings'),
    ({"a": [{"subject": "b", "weight": 60, "cluster": "c1"}, {"subject": "c", "weight": 60, "cluster": "c1"}]},
     'Mapping "a" in cluster "c1" exceeds 100% among all of it\'s weighted to mappings'),
])
def test_account_jwt_with_bad_mapping_weights_is_invalid(mappings, error):
    # nats-io/jwt's validation: nats-server takes no user of such an account (Authorization Violation)
    op = Operator()
    acc = op.account("M", mappings=mappings)
    with pytest.raises(hubjwt.JwtError) as e:
        hubjwt.account_claims(acc.jwt, {op.key.public}, acc.public)
    assert str(e.value) == error

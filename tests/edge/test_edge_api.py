"""The leaf's in-process API, its uplink rules (sans socket) and its config, on CPython and MicroPython.

Runs under pytest (CPython) and under the real `micropython` through tests/mp/run_unit.py
(tests/edge/test_edge_mp.py does that): plain test_* functions, bare asserts, no pytest import, no
reliance on dict order. Each test runs its own short asyncio.run() and waits by polling, never by
sleeping for a fixed time.

The uplink tests feed hub bytes through edge/proto.py's Parser into Uplink._event() and read what
the uplink wrote from a fake link, so the forwarding and interest rules are checked on the wire
format without a socket.
"""

import asyncio

from edge import proto
from edge.leaf import config
from edge.leaf.broker import Leaf, LeafError, NoResponders
from edge.leaf.robust import Backoff
from edge.leaf.uplink import Uplink


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 10))


async def until(cond, timeout=2.0):
    for _ in range(int(timeout * 200)):
        if cond():
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"condition not met in {timeout} s")


# ---- local pub/sub -------------------------------------------------------------------------------


def test_publish_reaches_plain_callback_with_message_fields():
    async def body():
        leaf = Leaf("t")
        got = []
        leaf.subscribe("a.b", got.append)
        assert leaf.publish("a.b", b"hi", headers={"K": "v"}, reply="r.1") == 1
        await until(lambda: got)
        m = got[0]
        assert m.subject == "a.b" and m.data == b"hi" and m.reply == "r.1"
        assert m.headers == {"K": "v"}
        leaf.publish(b"a.b", "text")
        await until(lambda: len(got) == 2)
        assert got[1].data == b"text" and got[1].headers is None and got[1].reply is None
        leaf.close()

    run(body())


def test_wildcards_match_as_nats_server():
    async def body():
        leaf = Leaf("t")
        seen = {}

        def sub(pattern):
            seen[pattern] = []
            leaf.subscribe(pattern, lambda m: seen[pattern].append(m.subject))

        for p in ("a.*", "a.>", ">", "a.*.c", "a.b", "*.b.>", "a.b*"):
            sub(p)
        for s in ("a.b", "a.b.c", "x", "a.b*", "a"):
            leaf.publish(s)
        await until(lambda: sum(len(v) for v in seen.values()) == 14)
        assert sorted(seen["a.*"]) == ["a.b", "a.b*"]
        assert sorted(seen["a.>"]) == ["a.b", "a.b*", "a.b.c"]
        assert sorted(seen[">"]) == ["a", "a.b", "a.b*", "a.b.c", "x"]
        assert seen["a.*.c"] == ["a.b.c"]
        assert seen["a.b"] == ["a.b"]
        assert seen["*.b.>"] == ["a.b.c"]
        assert seen["a.b*"] == ["a.b*"]  # `b*` is a literal token
        leaf.close()

    run(body())


def test_queue_group_delivers_to_one_member_per_group():
    async def body():
        leaf = Leaf("t", max_callbacks=128)
        counts = {}

        def member(name, queue):
            counts[name] = 0

            def cb(m):
                counts[name] += 1

            leaf.subscribe("jobs.*", cb, queue=queue)

        for name in ("q1a", "q1b", "q1c"):
            member(name, "q1")
        for name in ("q2a", "q2b"):
            member(name, "q2")
        member("plain", None)
        for i in range(30):
            leaf.publish(b"jobs.%d" % i, b"x")
        await until(lambda: sum(counts.values()) == 90)
        assert counts["q1a"] + counts["q1b"] + counts["q1c"] == 30
        assert counts["q2a"] + counts["q2b"] == 30
        assert counts["plain"] == 30
        assert min(counts.values()) > 0  # members take turns
        leaf.close()

    run(body())


def test_unsubscribe_stops_delivery_and_interest():
    async def body():
        leaf = Leaf("t")
        got = []
        s1 = leaf.subscribe("u", got.append)
        s2 = leaf.subscribe("u", got.append)
        q = leaf.subscribe("u", got.append, queue="g")
        assert leaf.interest[b"u"] == 2 and leaf.interest[b"u g"] == 1
        s1.unsubscribe()
        s1.unsubscribe()  # twice is harmless
        assert leaf.interest[b"u"] == 1
        q.unsubscribe()
        assert b"u g" not in leaf.interest
        leaf.publish("u")
        await until(lambda: got)
        s2.unsubscribe()
        assert leaf.interest == {} and leaf.subs.count == 0
        assert leaf.publish("u") == 0
        await asyncio.sleep(0.02)  # proves a negative: nothing more is delivered
        assert len(got) == 1
        leaf.close()

    run(body())


def test_coroutine_callbacks_are_awaited_in_order():
    async def body():
        leaf = Leaf("t")
        got = []

        async def cb(m):
            await asyncio.sleep(0.001)
            got.append(m.data)

        leaf.subscribe("c", cb)
        for i in range(5):
            leaf.publish("c", b"%d" % i)
        await until(lambda: len(got) == 5)
        assert got == [b"0", b"1", b"2", b"3", b"4"]
        leaf.close()

    run(body())


def test_failing_callback_is_counted_and_others_continue():
    async def body():
        leaf = Leaf("t")
        got = []

        def bad(m):
            raise ValueError("boom (expected in this test)")

        leaf.subscribe("f", bad)
        leaf.subscribe("f", got.append)
        leaf.publish("f")
        leaf.publish("f")
        await until(lambda: len(got) == 2)
        assert leaf.cb_errors == 2
        leaf.close()

    run(body())


def test_callback_queue_is_bounded_and_drops_newest():
    async def body():
        leaf = Leaf("t", max_callbacks=8)
        got = []
        leaf.subscribe("b", got.append)
        for i in range(100):
            leaf.publish("b", b"%d" % i)  # no await: the dispatcher cannot run meanwhile
        await until(lambda: len(got) == 8)
        assert [m.data for m in got] == [b"%d" % i for i in range(8)]
        assert leaf.cb_dropped == 92
        leaf.close()

    run(body())


def test_request_reply_and_no_responders_and_timeout():
    async def body():
        leaf = Leaf("t")

        async def svc(m):
            m.respond(b"re:" + m.data, headers={"X": "1"})

        leaf.subscribe("svc", svc, queue="workers")
        r = await leaf.request("svc", b"ping", timeout=1)
        assert r.data == b"re:ping" and r.headers == {"X": "1"}
        rs = []
        for i in range(3):
            rs.append(await leaf.request("svc", b"%d" % i))
        assert [m.data for m in rs] == [b"re:0", b"re:1", b"re:2"]
        try:
            await leaf.request("nobody", b"x")
            raise AssertionError("expected NoResponders")
        except NoResponders:
            pass
        leaf.subscribe("silent", lambda m: None)
        try:
            await leaf.request("silent", b"x", timeout=0.05)
            raise AssertionError("expected a timeout")
        except asyncio.TimeoutError:  # noqa: UP041 (MicroPython has no builtin TimeoutError)
            pass
        assert leaf._inbox.waiting == {}  # nothing left behind
        leaf.close()

    run(body())


def test_api_rejects_bad_subjects_and_limits():
    leaf = Leaf("t", max_subscriptions=2, max_payload=10)
    for bad in ("", "a..b", "a.*", "a.>", "a b", ".a"):
        try:
            leaf.publish(bad)
            raise AssertionError(f"publish {bad!r} accepted")
        except LeafError:
            pass
    for bad in ("a.>.b", "a..b", "", "a b"):
        try:
            leaf.subscribe(bad, print)
            raise AssertionError(f"subscribe {bad!r} accepted")
        except LeafError:
            pass
    try:
        leaf.subscribe("a", print, queue="bad queue")
        raise AssertionError("queue with a space accepted")
    except LeafError:
        pass
    try:
        leaf.publish("a", b"01234567890")
        raise AssertionError("payload over max_payload accepted")
    except LeafError:
        pass
    leaf.subscribe("a", print)
    leaf.subscribe("b", print)
    try:
        leaf.subscribe("c", print)
        raise AssertionError("third subscription accepted")
    except LeafError as e:
        assert "maximum subscriptions exceeded" in str(e)


# ---- uplink rules, on the wire format, without a socket ------------------------------------------


class FakeLink:
    def __init__(self):
        self.sent = []
        self.closed = False

    def write(self, data, force=False):
        self.sent.append(b"".join(data) if type(data) is tuple else bytes(data))  # a tuple: parts (proto PARTS_FROM)
        return True

    def take(self):
        out = b"".join(self.sent)
        self.sent = []
        return out


def _wired(leaf):
    up = Uplink(leaf, [("127.0.0.1", 7422, None, None, None)], "t")
    link = FakeLink()
    up.link = link
    return up, link


def _hub_says(up, link, data):
    p = proto.Parser(proto.KIND_LEAF)
    p.receive_data(data)
    while True:
        ev = p.next_event()
        if ev is None:
            return
        up._event(link, ev)


def test_local_interest_becomes_ls_plus_and_ls_minus_once_per_subject_and_queue():
    leaf = Leaf("t")
    up, link = _wired(leaf)
    a = leaf.subscribe("s.a", print)
    b = leaf.subscribe("s.a", print)
    q1 = leaf.subscribe("s.q", print, queue="w")
    q2 = leaf.subscribe("s.q", print, queue="w")
    lds = leaf.subscribe("$LDS.abc", print)
    assert link.take() == b"LS+ s.a\r\nLS+ s.q w 1\r\nLS+ s.q w 2\r\n"
    a.unsubscribe()
    assert link.take() == b""
    q1.unsubscribe()
    assert link.take() == b"LS+ s.q w 1\r\n"
    b.unsubscribe()
    q2.unsubscribe()
    lds.unsubscribe()
    assert link.take() == b"LS- s.a\r\nLS- s.q w\r\n"


def test_forward_only_where_the_hub_has_interest_naming_hub_queue_groups():
    async def body():
        leaf = Leaf("t")
        up, link = _wired(leaf)
        _hub_says(up, link, b"LS+ $LDS.xyz\r\nLS+ hub.p\r\nLS+ hub.*\r\nLS+ q.x workers 2\r\nLS+ q.> other 1\r\n")
        assert up.hub_interest() == 4  # $LDS is not kept
        leaf.publish("nobody.cares", b"x")
        leaf.publish("$LDS.xyz", b"x")
        assert link.take() == b""  # no interest: nothing leaks
        leaf.publish("hub.p", b"1")
        leaf.publish("hub.p", b"2", reply="r.1", headers={"A": "b"})
        assert link.take() == b"LMSG hub.p 1\r\n1\r\nHMSG hub.p r.1 18 19\r\nNATS/1.0\r\nA: b\r\n\r\n2\r\n"
        leaf.publish("q.x", b"3")
        leaf.publish("q.x", b"4", reply="r.2")
        assert link.take() == b"LMSG q.x | workers other 1\r\n3\r\nLMSG q.x + r.2 workers other 1\r\n4\r\n"
        # a local member of `workers` takes the message: that group is left out of the forward
        leaf.subscribe("q.x", print, queue="workers")
        link.take()
        leaf.publish("q.x", b"5")
        assert link.take() == b"LMSG q.x | other 1\r\n5\r\n"
        leaf.subscribe("q.x", print, queue="other")
        link.take()
        leaf.publish("q.x", b"6")
        assert link.take() == b""  # every hub group was served locally, and the hub has no plain interest
        _hub_says(up, link, b"LS- hub.*\r\nLS- q.x workers\r\nLS+ q.> other 3\r\n")
        assert up.qw[(b"q.>", b"other")][0] == 3  # weights are absolute
        leaf.publish("hub.z", b"7")
        assert link.take() == b""
        assert up.forwarded == 5 and up.dropped == 0
        leaf.close()

    run(body())

def test_hub_messages_reach_plain_subscribers_and_named_groups_once():
    async def body():
        leaf = Leaf("t")
        up, link = _wired(leaf)
        got = {"plain": 0, "w1": 0, "w2": 0, "o": 0}

        def counter(name):
            def cb(m):
                got[name] += 1

            return cb

        leaf.subscribe("j", counter("plain"))
        leaf.subscribe("j", counter("w1"), queue="workers")
        leaf.subscribe("j", counter("w2"), queue="workers")
        leaf.subscribe("j", counter("o"), queue="others")
        link.take()
        _hub_says(up, link, b"LMSG j 1\r\na\r\n")  # no groups named: plain subscribers only
        _hub_says(up, link, b"LMSG j | workers 1\r\nb\r\nLMSG j + r workers 1\r\nc\r\n")
        _hub_says(up, link, b"HMSG j | workers others 18 19\r\nNATS/1.0\r\nA: b\r\n\r\nd\r\n")
        await until(lambda: sum(got.values()) == 8)
        await asyncio.sleep(0.02)  # proves a negative: no ninth delivery
        assert got["plain"] == 4 and got["w1"] + got["w2"] == 3 and got["o"] == 1
        assert link.take() == b""  # hub messages are never sent back
        assert up.received == 4
        leaf.close()

    run(body())


def test_hub_ping_is_answered_and_loop_error_is_noted():
    leaf = Leaf("t")
    up, link = _wired(leaf)
    _hub_says(up, link, b"PING\r\n")
    assert link.take() == b"PONG\r\n"
    up.pings = 1
    _hub_says(up, link, b"PONG\r\n")
    assert up.pings == 0 and up.up
    _hub_says(up, link, b"-ERR 'Loop detected for leafnode account=\"$G\". Delaying attempt to reconnect for 30s'\r\n")
    assert up.loop_detected


def test_hub_urls_rotate_and_leafnode_urls_from_info_are_learned():
    leaf = Leaf("t")
    tls = ("ca.pem", True)
    up = Uplink(leaf, [("hub.example", 7422, tls, "u", "p"), ("10.0.0.9", 7000, None, None, None)], "t")
    link = FakeLink()
    up.link = link
    assert up.url() == "tls://hub.example:7422" and up.failovers == 0
    # a hub alone (reached through a proxy or NAT, say): its own advertised address is not learned
    _hub_says(up, link, b'INFO {"ip":"10.0.0.1:7422","leafnode_urls":["10.0.0.1:7422"]}\r\n')
    assert len(up.urls) == 2
    # a cluster member: its peers are learned, a configured URL is not repeated, and a learned address
    # verifies the name we dialled
    _hub_says(up, link, b'INFO {"ip":"10.0.0.1:7422","leafnode_urls":["10.0.0.1:7422","hub.example:7422",'
                        b'"10.0.0.2:7422","n3.example:7423"]}\r\n')
    assert up.urls[2:] == [("10.0.0.2", 7422, ("ca.pem", True, "hub.example"), "u", "p"),
                           ("n3.example", 7423, ("ca.pem", True), "u", "p")]
    seen = []
    for _ in range(5):
        up.next_url()
        seen.append(up.url())
    assert seen == ["nats-leaf://10.0.0.9:7000", "tls://10.0.0.2:7422", "tls://n3.example:7423",
                    "tls://hub.example:7422", "nats-leaf://10.0.0.9:7000"]
    # async INFO: the cluster's list replaces what was learned; the configured URLs stay
    _hub_says(up, link, b'INFO {"leafnode_urls":["10.0.0.3:7422"]}\r\n')
    assert [u[:2] for u in up.urls] == [("hub.example", 7422), ("10.0.0.9", 7000), ("10.0.0.3", 7422)]
    assert up.url() == "nats-leaf://10.0.0.9:7000"  # the current URL is kept
    up.next_url()
    assert up.url() == "nats-leaf://10.0.0.3:7422"  # learned on a URL without TLS or credentials
    assert up.urls[2] == ("10.0.0.3", 7422, None, None, None)
    # no list or an empty one changes nothing; a long one is capped; the learned URL in use stays
    _hub_says(up, link, b'INFO {"leafnode_urls":[]}\r\nINFO {"server_id":"x"}\r\n')
    assert len(up.urls) == 3
    many = ",".join([f'"10.1.0.{i}:7422"' for i in range(20)])
    _hub_says(up, link, b'INFO {"ip":"10.0.0.3:7422","leafnode_urls":["10.0.0.3:7422",' + many.encode() + b"]}\r\n")
    assert len(up.urls) == 8 and up.urls[0][0] == "hub.example" and up.urls[2][0] == "10.0.0.3"
    assert up.urls[7][0] == "10.1.0.4" and up.url() == "nats-leaf://10.0.0.3:7422"
    up.next_url()
    assert up.url() == "nats-leaf://10.1.0.0:7422"


def test_failovers_count_links_up_on_another_url():
    leaf = Leaf("t")
    up = Uplink(leaf, [("a", 1, None, None, None), ("b", 2, None, None, None)], "t")
    link = FakeLink()
    up.link = link
    for host in ("a", "a", "b", "b", "a"):  # up on a, again on a, then b twice, then back on a
        if up.host != host:
            up.next_url()
        up.up = False
        _hub_says(up, link, b"PONG\r\n")
        assert up.up
    assert up.failovers == 2


def test_hub_interest_table_is_bounded():
    leaf = Leaf("t")
    up = Uplink(leaf, [("h", 1, None, None, None)], "t", max_hub_interest=3)
    link = FakeLink()
    up.link = link
    _hub_says(up, link, b"LS+ a\r\nLS+ b\r\nLS+ c q 1\r\nLS+ d\r\nLS+ e q 1\r\n")
    assert up.hub_interest() == 3 and up.saturated and up.overflows == 2
    leaf.publish("zzz", b"x")  # saturated: forwarded, the hub filters
    assert link.take() == b"LMSG zzz 1\r\nx\r\n"


def test_connect_carries_no_lang_and_credentials():
    import json

    leaf = Leaf("t")
    up = Uplink(leaf, [("h", 1, None, "u", "p")], "edge-7")
    line = up._connect({})
    assert line.startswith(b"CONNECT ") and line.endswith(b"\r\n")
    opts = json.loads(line[8:])
    assert "lang" not in opts
    assert opts["headers"] is True and opts["protocol"] == 3 and opts["name"] == "edge-7"
    assert opts["user"] == "u" and opts["pass"] == "p"
    opts = json.loads(Uplink(Leaf("t"), [("h", 1, None, None, None)], "e", token="tk")._connect({})[8:])
    assert opts["auth_token"] == "tk" and "user" not in opts


# ---- retry policy ----------------------------------------------------------------------------------


def test_backoff_grows_with_jitter_and_resets():
    b = Backoff(100, 1000, seed=12345)
    ds = [b.next_ms() for _ in range(8)]
    ceilings = [100, 200, 400, 800, 1000, 1000, 1000, 1000]
    for i, c in enumerate(ceilings):
        assert c // 2 <= ds[i] <= c, (ds[i], c)
    b.reset()
    assert 50 <= b.next_ms() <= 100
    # two edges with different seeds do not retry in step
    x = [Backoff(1000, 30000, seed=1).next_ms() for _ in range(1)]
    firsts = [Backoff(1000, 30000, seed=s).next_ms() for s in range(1, 40)]
    assert len(set(firsts)) > 30 and x[0] == firsts[0]


# ---- config ---------------------------------------------------------------------------------------


def _err(doc):
    try:
        config.check(doc)
    except config.ConfigError as e:
        return str(e)
    raise AssertionError(f"accepted {doc!r}")


def test_gc_threshold_defaults_to_4k_on_a_small_heap_and_an_explicit_value_wins():
    # (runs on MicroPython too, tests/mp/run_unit.py: no pytest fixtures)
    assert config.check({"name": "e1"})["limits"]["gc_threshold"] == 0  # the test heaps are not small ones
    real = config.small_heap
    config.small_heap = lambda: True
    try:
        assert config.check({"name": "e1"})["limits"]["gc_threshold"] == 4096
        assert config.check({"name": "e1", "limits": {"gc_threshold": 0}})["limits"]["gc_threshold"] == 0
        assert config.check({"name": "e1", "limits": {"gc_threshold": 16384}})["limits"]["gc_threshold"] == 16384
    finally:
        config.small_heap = real
    assert _err({"name": "e", "limits": {"gc_threshold": -1}}) == \
        'config: "limits.gc_threshold": expected an integer >= 0, got -1'
    assert _err({"name": "e", "limits": {"gc_threshold": "4k"}}) == \
        'config: "limits.gc_threshold": expected an integer >= 0, got "4k"'


def test_config_defaults_and_normalisation():
    c = config.check({"name": "e1", "listen": "0.0.0.0:4222",
                      "hub": {"url": "nats-leaf://u:p@hub.example:7000", "tls": {"ca": "ca.pem"}},
                      "limits": {"ping_interval": 2.5, "max_connections": 6}})
    assert c["listen"] == ("0.0.0.0", 4222)
    h = c["hub"]
    assert (h["host"], h["port"], h["user"], h["password"], h["token"]) == ("hub.example", 7000, "u", "p", None)
    assert h["tls"] == ("ca.pem", True)
    assert c["limits"]["ping_interval"] == 2500 and c["limits"]["max_connections"] == 6
    assert c["limits"]["max_subscriptions"] == 64 and c["limits"]["reconnect_max"] == 30000
    assert c["app"] is None and c["data"] == "data" and c["stats"] == 0
    c = config.check({"name": "e2", "hub": {"url": "tls://h", "token": "t"}})
    assert c["hub"]["port"] == 7422 and c["hub"]["tls"] == (None, True) and c["listen"] is None
    assert config.check({"name": "e3", "hub": None, "wifi": {"ssid": "x"}})["hub"] is None


def test_config_hub_url_takes_a_list():
    h = config.check({"name": "e", "hub": {"url": ["nats-leaf://a:1", "tls://b", "nats://u:p@c:3/"]}})["hub"]
    assert h["urls"] == [("a", 1, None, None, None), ("b", 7422, (None, True), None, None), ("c", 3, None, "u", "p")]
    assert (h["host"], h["port"], h["tls"], h["user"]) == ("a", 1, None, None)
    # one string stays valid: a rotation of one
    assert config.check({"name": "e", "hub": {"url": "nats-leaf://a:1"}})["hub"]["urls"] == [("a", 1, None, None, None)]
    # hub.user, hub.password and hub.tls apply to every URL
    h = config.check({"name": "e", "hub": {"url": ["nats-leaf://a", "nats-leaf://x:y@b"], "user": "v",
                                           "password": "w", "tls": True}})["hub"]
    assert h["urls"] == [("a", 7422, (None, True), "v", "w"), ("b", 7422, (None, True), "v", "w")]


def test_config_hub_url_list_errors_name_the_entry():
    def hub(**h):
        return _err({"name": "e", "hub": h})

    assert hub(url=[]) == 'config: "hub.url": expected "nats-leaf://host:port" or a non-empty list of them, got []'
    assert hub(url="") == 'config: "hub.url": expected "nats-leaf://host:port" or a non-empty list of them, got ""'
    assert hub(url=5) == 'config: "hub.url": expected "nats-leaf://host:port" or a non-empty list of them, got 5'
    assert hub(url=["nats-leaf://a", "http://b"]) == \
        'config: "hub.url[1]": expected "nats-leaf://host:port", got "http://b"'
    assert hub(url=["nats-leaf://a", 5]) == 'config: "hub.url[1]": expected "nats-leaf://host:port", got 5'
    assert hub(url=[""]) == 'config: "hub.url[0]": expected "nats-leaf://host:port", got ""'
    assert hub(url=["nats-leaf://a:99999"]) == 'config: "hub.url[0]": expected "host:port", got "a:99999"'
    assert hub(url=["nats-leaf://a:1", "nats://a:1"]) == \
        'config: "hub.url[1]": expected a host:port not listed before, got "nats://a:1"'
    assert hub(url=["nats-leaf://a", "nats-leaf://u:p@b"], token="t") == \
        'config: "hub.token": expected null when hub.user is set, got "t"'


def test_config_errors_name_the_key():
    assert _err({"name": "e", "listen": 42}) == 'config: "listen": expected "host:port" or null, got 42'
    assert _err({"name": "e", "listen": "nohost"}) == 'config: "listen": expected "host:port" or null, got "nohost"'
    assert _err({"name": "e", "listen": "h:99999"}) == 'config: "listen": expected "host:port" or null, got "h:99999"'
    assert _err({"listen": None}) == 'config: "name": expected a non-empty string, got null'
    assert _err({"name": "a b"}) == 'config: "name": expected a name without spaces, got "a b"'
    assert _err({"name": "e", "limts": {}}) == 'config: unknown key "limts"'
    assert _err({"name": "e", "hub": {"url": "http://x"}}) == \
        'config: "hub.url": expected "nats-leaf://host:port", got "http://x"'
    assert _err({"name": "e", "hub": {}}) == \
        'config: "hub.url": expected "nats-leaf://host:port" or a non-empty list of them, got null'
    assert _err({"name": "e", "hub": "x"}) == 'config: "hub": expected an object or null, got "x"'
    assert _err({"name": "e", "hub": {"url": "nats-leaf://h", "tls": "yes"}}) == \
        'config: "hub.tls": expected true, false, null or {"ca": path, "verify": bool}, got "yes"'
    assert _err({"name": "e", "hub": {"url": "nats-leaf://h", "tls": {"verify": 1}}}) == \
        'config: "hub.tls.verify": expected true or false, got 1'
    assert _err({"name": "e", "hub": {"url": "nats-leaf://h", "pass": "x"}}) == 'config: unknown key "hub.pass"'
    assert _err({"name": "e", "limits": {"max_connections": -1}}) == \
        'config: "limits.max_connections": expected an integer >= 0, got -1'
    assert _err({"name": "e", "limits": {"max_payload": True}}) == \
        'config: "limits.max_payload": expected an integer >= 1, got true'
    assert _err({"name": "e", "limits": {"ping_interval": "5"}}) == \
        'config: "limits.ping_interval": expected a number of seconds >= 0.05, got "5"'
    assert _err({"name": "e", "limits": {"max_payload": 100, "max_pending": 50}}) == \
        'config: "limits.max_payload": expected at most limits.max_pending (50), got 100'
    assert _err({"name": "e", "app": "my app"}) == 'config: "app": expected a module name or null, got "my app"'
    assert _err({"name": "e", "stats": -1}) == 'config: "stats": expected a number of seconds >= 0 (0 = off), got -1'
    assert _err([1]) == "config: expected a JSON object at the top level, got [1]"

"""edge/micro in process, on CPython and MicroPython: `leaf.service(...)`, endpoints, groups, the $SRV answers,
error headers, stats, limits, stop, and the validation of names, versions and subjects.

Runs under pytest (CPython) and under the real `micropython` through tests/mp/run_unit.py (tests/edge/test_micro.py
does that), like tests/edge/test_edge_api.py: plain test_* functions, bare asserts, no pytest import, no reliance
on dict order, waits by polling.
"""

import asyncio
import json

from edge.leaf.broker import Leaf, LeafError, NoResponders
from edge.micro.service import ServiceError, semver_ok


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 10))


async def until(cond, timeout=2.0):
    for _ in range(int(timeout * 200)):
        if cond():
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"condition not met in {timeout} s")


async def collect(leaf, subject, n, data=b""):
    # Every answer to one request (discovery collects, it does not take the first): waits for n of them.
    got = []
    sub = leaf.subscribe("_INBOX.t.*", got.append)
    leaf.publish(subject, data, reply="_INBOX.t.1")
    await until(lambda: len(got) >= n)
    await until(lambda: leaf._cbtask is None)  # every answer is queued before the first one is taken: all are in
    sub.unsubscribe()
    assert len(got) == n, [m.data for m in got]
    return [json.loads(m.data) for m in got]


def calc(leaf):
    svc = leaf.service("calc", "1.2.3", description="demo", metadata={"region": "eu"})
    svc.endpoint("echo", lambda m: m.data, metadata={"k": "v"})
    g = svc.group("math", queue="mq")
    g.endpoint("fail", _teapot)
    return svc


def _teapot(msg):
    raise ServiceError(418, "teapot")


def test_ping_info_stats_for_all_by_name_and_by_id():
    async def body():
        leaf = Leaf("t")
        svc = calc(leaf)
        ident = {"name": "calc", "id": svc.id, "version": "1.2.3", "metadata": {"region": "eu"}}
        for verb, typ in (("PING", "ping"), ("INFO", "info"), ("STATS", "stats")):
            for subject in ("$SRV." + verb, f"$SRV.{verb}.calc", f"$SRV.{verb}.calc.{svc.id}"):
                (d,) = await collect(leaf, subject, 1)
                assert d["type"] == f"io.nats.micro.v1.{typ}_response", d
                for k, v in ident.items():
                    assert d[k] == v, (subject, k, d)
        (info,) = await collect(leaf, "$SRV.INFO", 1)
        assert info["description"] == "demo"
        eps = sorted(info["endpoints"], key=lambda e: e["name"])
        assert eps == [{"name": "echo", "subject": "echo", "queue_group": "q", "metadata": {"k": "v"}},
                       {"name": "fail", "subject": "math.fail", "queue_group": "mq", "metadata": None}], eps
        (stats,) = await collect(leaf, "$SRV.STATS.calc", 1)
        s = stats["started"]  # RFC 3339 UTC with milliseconds, as nats-py writes it
        assert len(s) == 24 and s[4] == s[7] == "-" and s[10] == "T" and s[19] == "." and s[23] == "Z", s
        assert int(s[:4]) >= 2024
        for e in stats["endpoints"]:
            assert e["num_requests"] == e["num_errors"] == e["processing_time"] == 0 and e["last_error"] == "", e
            assert e["average_processing_time"] == 0 and e["data"] is None, e
        try:
            await leaf.request("$SRV.PING.other", b"", timeout=1)
            raise AssertionError("a request for another service's name found a responder")
        except NoResponders:
            pass
        leaf.close()

    run(body())


def test_every_instance_answers_discovery_and_ids_differ():
    async def body():
        leaf = Leaf("t")
        a = leaf.service("calc", "1.0.0")
        b = leaf.service("calc", "1.0.0")
        c = leaf.service("other", "0.1.0")
        assert len(a.id) == 22 and a.id != b.id != c.id != a.id
        answers = await collect(leaf, "$SRV.PING", 3)
        assert sorted(d["id"] for d in answers) == sorted([a.id, b.id, c.id])
        assert all(d["metadata"] == {} for d in answers)  # {} when unset, never null (natscli#756)
        answers = await collect(leaf, "$SRV.PING.calc", 2)
        assert sorted(d["id"] for d in answers) == sorted([a.id, b.id])
        leaf.close()

    run(body())


def test_handlers_answer_by_return_by_respond_and_async():
    async def body():
        leaf = Leaf("t")
        svc = leaf.service("svc", "1.0.0")

        def by_respond(msg):
            msg.respond(b"resp:" + msg.data, headers={"X-K": "v"})

        async def by_await(msg):
            await asyncio.sleep(0)
            return "async:" + msg.data.decode()

        svc.endpoint("ret", lambda m: b"ret:" + m.data)
        svc.endpoint("resp", by_respond)
        svc.endpoint("aw", by_await, subject="a.w")
        assert (await leaf.request("ret", b"1")).data == b"ret:1"
        r = await leaf.request("resp", b"2")
        assert r.data == b"resp:2" and r.headers == {"X-K": "v"}
        assert (await leaf.request("a.w", b"3")).data == b"async:3"
        (stats,) = await collect(leaf, "$SRV.STATS", 1)
        for e in stats["endpoints"]:
            assert e["num_requests"] == 1 and e["num_errors"] == 0, e
            assert e["average_processing_time"] == e["processing_time"] >= 0, e
        leaf.close()

    run(body())


def test_service_error_and_unhandled_exception_become_error_headers():
    async def body():
        leaf = Leaf("t")
        svc = calc(leaf)

        def kaput(msg):
            raise ValueError("kaput")

        async def kaput_later(msg):
            await asyncio.sleep(0)
            raise ServiceError(503, "busy\r\nnow")

        svc.endpoint("boom", kaput)
        svc.endpoint("later", kaput_later)
        svc.endpoint("bad", lambda m: 42)  # not bytes or str: the requester hears why
        r = await leaf.request("math.fail", b"")
        assert r.data == b"" and r.headers == {"Nats-Service-Error": "teapot", "Nats-Service-Error-Code": "418"}
        r = await leaf.request("boom", b"")
        assert r.headers == {"Nats-Service-Error": "ValueError('kaput')", "Nats-Service-Error-Code": "500"}
        r = await leaf.request("later", b"")
        assert r.headers == {"Nats-Service-Error": "busy  now", "Nats-Service-Error-Code": "503"}
        r = await leaf.request("bad", b"")
        assert r.headers == {"Nats-Service-Error": "TypeError('the handler returned int, not bytes or str')",
                             "Nats-Service-Error-Code": "500"}, r.headers
        await leaf.request("math.fail", b"")
        (stats,) = await collect(leaf, "$SRV.STATS", 1)
        by = {e["name"]: e for e in stats["endpoints"]}
        assert by["fail"]["num_requests"] == 2 and by["fail"]["num_errors"] == 2
        assert by["fail"]["last_error"] == "418:teapot"
        assert by["boom"]["last_error"] == "ValueError('kaput')" and by["boom"]["num_errors"] == 1
        assert by["later"]["last_error"] == "503:busy  now"
        assert by["echo"]["num_requests"] == 0
        assert leaf.cb_errors == 0  # handler failures are answers, not callback crashes
        leaf.close()

    run(body())


def test_groups_nest_and_resolve_queue_groups():
    async def body():
        leaf = Leaf("t")
        svc = leaf.service("svc", "1.0.0")
        a = svc.group("a")
        b = a.group("b.c", queue="bq")
        svc.endpoint("top", len, queue="tq")
        a.endpoint("x", len)
        a.endpoint("y", len, subject="why.*", queue="yq")
        b.endpoint("z", len)
        b.group("d").endpoint("w", len, subject=">")
        (info,) = await collect(leaf, "$SRV.INFO", 1)
        got = sorted((e["name"], e["subject"], e["queue_group"]) for e in info["endpoints"])
        assert got == [("top", "top", "tq"), ("w", "a.b.c.d.>", "bq"), ("x", "a.x", "q"), ("y", "a.why.*", "yq"),
                       ("z", "a.b.c.z", "bq")], got
        leaf.close()

    run(body())


def test_stop_removes_every_subscription():
    async def body():
        leaf = Leaf("t")
        before = leaf.subs.count
        svc = calc(leaf)
        assert leaf.subs.count == before + 9 + 2
        svc.stop()
        svc.stop()
        assert leaf.subs.count == before and not leaf.interest
        for subject in ("$SRV.PING", "echo", "math.fail"):
            try:
                await leaf.request(subject, b"", timeout=1)
                raise AssertionError("a stopped service answered " + subject)
            except NoResponders:
                pass
        try:
            svc.endpoint("late", len)
            raise AssertionError("an endpoint was added to a stopped service")
        except LeafError as e:
            assert str(e) == "service calc is stopped", e
        leaf.close()

    run(body())


def test_subscriptions_are_bounded_by_max_subscriptions():
    leaf = Leaf("t", max_subscriptions=10)
    svc = leaf.service("one", "1.0.0")
    svc.endpoint("e1", len)
    try:
        svc.endpoint("e2", len)
        raise AssertionError("an endpoint went past max_subscriptions")
    except LeafError as e:
        assert str(e) == "maximum subscriptions exceeded", e
    svc.stop()
    leaf.subscribe("x", len)
    leaf.subscribe("y", len)
    try:
        leaf.service("two", "1.0.0")
        raise AssertionError("a service went past max_subscriptions")
    except LeafError as e:
        assert str(e) == ("service two: maximum subscriptions exceeded (it takes 9 subscriptions, each endpoint 1; "
                          "see limits.max_subscriptions)"), e
    assert leaf.subs.count == 2  # nothing half made
    leaf.close()


def _err(f, *a, **kw):
    try:
        f(*a, **kw)
    except LeafError as e:
        return str(e)
    raise AssertionError(f"no error for {a!r} {kw!r}")


def test_bad_names_versions_subjects_and_metadata_are_refused_with_one_line():
    leaf = Leaf("t")
    for name in ("a b", "", "a.b", "a*", "é", "\u0663", None, 7):
        assert _err(leaf.service, name, "1.0.0") == f"service name {name!r}: use only A-Z, a-z, 0-9, \"-\" and \"_\""
    for v in ("1.0", "1.0.0.0", "01.0.0", "1.0.0-", "1.0.0-01", "1.0.0+", "1.0.0-a..b", "v1.0.0", "1.0.0-é",
              "1.\u0663.0", None, "1.0.0 "):
        assert _err(leaf.service, "s", v) == (f"service version {v!r}: not a SemVer version (1.2.3, 1.2.3-rc.1, "
                                              "1.2.3+build.5)")
    assert _err(leaf.service, "s", "1.0.0", description=5) == "service description: expected a str, got 5"
    assert _err(leaf.service, "s", "1.0.0", metadata={"k": 1}) == (
        "service metadata: expected a dict of str to str, got {'k': 1}")
    svc = leaf.service("s", "1.0.0")
    assert _err(svc.endpoint, "a b", len) == "endpoint name 'a b': use only A-Z, a-z, 0-9, \"-\" and \"_\""
    assert _err(svc.endpoint, "e", None) == "endpoint e: the handler is not callable"
    for subject in ("a >", "a.>.b", "a..b", "", ">x", "a b"):
        assert _err(svc.endpoint, "e", len, subject=subject) == (
            f"endpoint subject {subject!r}: not a valid subject (no spaces, \">\" only at the end)")
    assert _err(svc.endpoint, "e", len, queue="q q") == "queue group 'q q': not a valid queue name (no spaces)"
    assert _err(svc.endpoint, "e", len, metadata=["k"]) == ("endpoint metadata: expected a dict of str to str, "
                                                           "got ['k']")
    for g in ("a.>", "a b", "", ">"):
        assert _err(svc.group, g) == (f"group name {g!r}: not a valid subject prefix (tokens without spaces, no "
                                      "\">\")")
    assert _err(svc.group, "g", queue="a b") == "queue group 'a b': not a valid queue name (no spaces)"
    assert leaf.subs.count == 9  # the refused endpoints took nothing
    leaf.close()


def test_semver_accepts_the_official_grammar():
    for v in ("0.0.0", "1.2.3", "10.20.30", "1.1.2-prerelease+meta", "1.0.0-alpha.beta.1", "1.0.0-0.3.7",
              "1.0.0-x-y-z.--", "1.0.0+0.build.1-rc.10000aaa-kk-0.1", "1.0.0-alpha0.valid", "1.0.0-rc.1+build.123",
              "99999999999999999999999.999999999999999999.99999999999999999"):
        assert semver_ok(v), v
    for v in ("1", "1.2", "1.2.3-0123", "1.2.3-0123.0123", "+invalid", "-invalid", "alpha", "1.2.3.DEV",
              "1.2-SNAPSHOT", "1.2.31.2.3----RC-SNAPSHOT.12.09.1--..12+788", "01.1.1", "1.01.1", "1.1.01",
              "1.2.3-beta.01", "1.2.3+a+b"):
        assert not semver_ok(v), v

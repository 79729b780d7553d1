"""JetStream mirrors and sources, and JetStream domains across leafnodes (issue 18 items 1 and 2).

Every scenario runs against nats-server and the hub. The local ones share one JetStream server per side (fixture
`jsrv`, own stream names per test); the cross-domain ones start a `site` server (domain `site`, a leaf of the cloud)
and a `cloud` server (domain `cloud`), of every combination of the two kinds, and cut the link by stopping one end.
"""

from __future__ import annotations

import asyncio
import base64
import json

import nats
import pytest

from .harness import Raw, Server, api_error, free_port, js_api, js_client, run, selected_sides

API = "$JS.API"
SYNC_TIMEOUT = 10.0  # a source set up from scratch: jitter, the consumer request, the first deliveries
# After an outage a source waits for its health check (10 s without news) and its retry backoff before asking the
# origin for a new consumer, in nats-server as in the hub.
CATCH_UP_TIMEOUT = 60.0


async def create(nc, name: str, api: str = API, **cfg) -> dict:
    resp = await js_api(nc, f"{api}.STREAM.CREATE.{name}", {"name": name, **cfg})
    assert "error" not in resp, resp
    return resp


async def info(nc, name: str, api: str = API) -> dict:
    resp = await js_api(nc, f"{api}.STREAM.INFO.{name}")
    assert "error" not in resp, resp
    return resp


async def publish(nc, subject: str, payload: bytes) -> dict:
    return json.loads((await nc.request(subject, payload, timeout=2)).data)


async def messages(nc, name: str, api: str = API) -> list[tuple[int, str, bytes, str]]:
    """(seq, subject, payload, Nats-Stream-Source without nats-server's trailing stream identity) of every message."""
    out = []
    state = (await info(nc, name, api))["state"]
    for seq in range(state["first_seq"], state["last_seq"] + 1):
        m = await js_api(nc, f"{api}.STREAM.MSG.GET.{name}", {"seq": seq})
        if "error" in m:
            continue
        msg = m["message"]
        source = ""
        for line in base64.b64decode(msg.get("hdrs", "")).decode().split("\r\n"):
            if line.startswith("Nats-Stream-Source:"):
                # <name>[:<api hash>] <seq> <filter> <dest> <subject> [<identity>]: the identity is nats-server's
                # stream identity (API level 4), which the hub does not have
                source = " ".join(line.split(":", 1)[1].strip(" ").split(" ")[:5])  # (fields may hold \f)
        out.append((msg["seq"], msg["subject"], base64.b64decode(msg.get("data", "")), source))
    return out


async def wait_messages(nc, name: str, n: int, timeout: float = SYNC_TIMEOUT, api: str = API) -> dict:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        si = await info(nc, name, api)
        if si["state"]["messages"] >= n:
            return si
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"{name} has {si['state']['messages']} of {n} messages: {si}")
        await asyncio.sleep(0.05)


# ---- local mirrors and sources ----------------------------------------------------------------------------------


def test_source_copies_messages_with_the_source_header(jsrv):
    async def go():
        async with js_client(jsrv) as (nc, _):
            await create(nc, "SRCA", subjects=["srca.>"])
            for i in range(3):
                await publish(nc, f"srca.{i}", b"m%d" % i)
            resp = await create(nc, "SRCB", sources=[{"name": "SRCA", "filter_subject": "srca.>"}])
            cfg = resp["config"]
            assert "subjects" not in cfg and "duplicate_window" not in cfg
            assert cfg["sources"] == [{"name": "SRCA", "filter_subject": "srca.>"}]
            await wait_messages(nc, "SRCB", 3)
            await publish(nc, "srca.3", b"m3")
            si = await wait_messages(nc, "SRCB", 4)
            assert await messages(nc, "SRCB") == [
                (i + 1, f"srca.{i}", b"m%d" % i, f"SRCA {i + 1} srca.> > srca.{i}") for i in range(4)]
            [src] = si["sources"]
            assert src["name"] == "SRCA" and src["lag"] == 0 and src["filter_subject"] == "srca.>"
            assert src["seq"] == 4 and 0 <= src["active"] < 10**10
            assert si["config"]["sources"] == [{"name": "SRCA", "filter_subject": "srca.>"}]
            # the origin's consumer for the source is a direct one: not counted, not listed
            origin = await info(nc, "SRCA")
            assert origin["state"]["consumer_count"] == 0
            assert (await js_api(nc, f"{API}.CONSUMER.NAMES.SRCA"))["consumers"] == []
            # a client may not publish a source header itself
            bad = await nc.request("srca.4", b"", headers={"Nats-Stream-Source": "X 1 > > x"}, timeout=2)
            assert json.loads(bad.data)["error"]["err_code"] == 10227

    run(go())


def test_mirror_keeps_the_origin_sequences(jsrv):
    async def go():
        async with js_client(jsrv) as (nc, _):
            await create(nc, "MIRA", subjects=["mira.>"])
            for i in range(5):
                await publish(nc, f"mira.{i}", b"m%d" % i)
            await js_api(nc, f"{API}.STREAM.MSG.DELETE.MIRA", {"seq": 4})
            resp = await create(nc, "MIRB", mirror={"name": "MIRA"})
            assert resp["config"]["mirror"] == {"name": "MIRA"} and "subjects" not in resp["config"]
            await wait_messages(nc, "MIRB", 4)
            await publish(nc, "mira.5", b"m5")
            si = await wait_messages(nc, "MIRB", 5)
            got = await messages(nc, "MIRB")
            assert [(seq, subj, data) for seq, subj, data, _ in got] == [
                (i + 1, f"mira.{i}", b"m%d" % i) for i in range(6) if i != 3]
            assert all(src == "" for *_, src in got)  # a mirror adds no header
            assert si["state"]["last_seq"] == 6
            assert set(si["mirror"]) == {"name", "lag", "active"} and si["mirror"]["lag"] == 0
            # a mirror takes no publishes of its own and keeps its mirror
            err = await js_api(nc, f"{API}.STREAM.UPDATE.MIRB", {"name": "MIRB", "mirror": {"name": "MIRX"}})
            assert api_error(err)[1] == 10055
            # starting later in the origin
            await create(nc, "MIRC", mirror={"name": "MIRA", "opt_start_seq": 3})
            si = await wait_messages(nc, "MIRC", 3)
            assert (si["state"]["first_seq"], si["state"]["last_seq"]) == (3, 6)

    run(go())


def test_source_start_sequence_and_update(jsrv):
    async def go():
        async with js_client(jsrv) as (nc, _):
            await create(nc, "SSA", subjects=["ssa.>"])
            await create(nc, "SSB", subjects=["ssb.>"])
            for i in range(4):
                await publish(nc, f"ssa.{i}", b"a%d" % i)
                await publish(nc, f"ssb.{i}", b"b%d" % i)
            await create(nc, "SSC", subjects=["ssc.>"], sources=[{"name": "SSA", "opt_start_seq": 3}])
            await wait_messages(nc, "SSC", 2)
            # an update adds a second source; the first goes on where it was
            resp = await js_api(nc, f"{API}.STREAM.UPDATE.SSC", {
                "name": "SSC", "subjects": ["ssc.>"],
                "sources": [{"name": "SSA", "opt_start_seq": 3}, {"name": "SSB", "filter_subject": "ssb.1"}]})
            assert "error" not in resp, resp
            await wait_messages(nc, "SSC", 3)
            await publish(nc, "ssc.own", b"own")
            got = sorted((subj, data, src) for _, subj, data, src in await messages(nc, "SSC"))
            assert got == [("ssa.2", b"a2", "SSA 3 > > ssa.2"), ("ssa.3", b"a3", "SSA 4 > > ssa.3"),
                           ("ssb.1", b"b1", "SSB 2 ssb.1 > ssb.1"), ("ssc.own", b"own", "")]

    run(go())


def test_subject_transforms_of_a_source_and_a_mirror(jsrv):
    async def go():
        async with js_client(jsrv) as (nc, _):
            await create(nc, "TRA", subjects=["tra.>"])
            for i in range(3):
                await publish(nc, f"tra.{i}.x", b"%d" % i)
            transforms = [{"src": "tra.*.x", "dest": "trb.{{wildcard(1)}}"}, {"src": "tra.9", "dest": ""}]
            resp = await create(nc, "TRB", subjects=["trb.own"], sources=[{"name": "TRA",
                                                                          "subject_transforms": transforms}])
            assert resp["config"]["sources"] == [{"name": "TRA", "subject_transforms": transforms}]
            si = await wait_messages(nc, "TRB", 3)
            assert si["sources"][0]["subject_transforms"] == transforms
            assert await messages(nc, "TRB") == [
                (i + 1, f"trb.{i}", b"%d" % i, f"TRA {i + 1} tra.*.x\ftra.9 trb.{{{{wildcard(1)}}}}\f> tra.{i}.x")
                for i in range(3)]
            await create(nc, "TRM", mirror={"name": "TRA", "subject_transforms": [{"src": "tra.>", "dest": "trm.>"}]})
            await wait_messages(nc, "TRM", 3)
            assert [(seq, subj) for seq, subj, _, _ in await messages(nc, "TRM")] == [
                (i + 1, f"trm.{i}.x") for i in range(3)]

    run(go())


@pytest.mark.parametrize("cfg, code", [
    ({"mirror": {"name": "O"}, "subjects": ["x.>"]}, 10034),
    ({"mirror": {"name": "O"}, "sources": [{"name": "P"}]}, 10031),
    ({"mirror": {"name": "O"}, "first_seq": 5}, 10143),
    ({"mirror": {"name": "a.b"}}, 10142),
    ({"sources": [{"name": ""}]}, 10141),
    ({"sources": [{"name": "O"}, {"name": "O"}]}, 10140),
    ({"sources": [{"name": "O", "external": {"api": "$JS.API"}}]}, 10021),
    ({"sources": [{"name": "O", "external": {"api": "$JS.x.API", "deliver": "d.*"}}]}, 10024),
    ({"sources": [{"name": "O", "opt_start_time": "yesterday"}]}, 10025),
    ({"sources": {"name": "O"}}, 10025),
    ({"sources": [{"name": "O", "subject_transforms": [{"src": "a..b", "dest": "x"}]}]}, 10145),
    ({"sources": [{"name": "O", "subject_transforms": [{"src": "a.*", "dest": "x.{{wildcard(2)}}"}]}]}, 10146),
    ({"sources": [{"name": "O", "subject_transforms": [{"src": "a.>", "dest": "x.>"}, {"src": "a.b", "dest": "y"}]}]},
     10147),
    ({"sources": [{"name": "O", "filter_subject": "a.>", "subject_transforms": [{"src": "a.>", "dest": "x.>"}]}]},
     10144),
    ({"mirror": {"name": "O", "subject_transforms": [{"src": "a.*", "dest": "x.{{nope(1)}}"}]}}, 10154),
    ({"mirror": {"name": "O", "subject_transforms": [{"src": "a.>", "dest": "x.>"}, {"src": "*.b", "dest": "y"}]}},
     10152),
])
def test_source_config_errors(jsrv, cfg, code):
    async def go():
        async with js_client(jsrv) as (nc, _):
            resp = await js_api(nc, f"{API}.STREAM.CREATE.BADSRC", {"name": "BADSRC", **cfg})
            assert api_error(resp)[1] == code, resp

    run(go())


def test_source_resumes_after_a_restart_without_duplicates(side, tmp_path):
    srv = Server(side, jetstream=True, workdir=tmp_path)
    try:
        srv.start()

        async def before():
            async with js_client(srv) as (nc, _):
                await create(nc, "RSA", subjects=["rsa.>"])
                await create(nc, "RSB", sources=[{"name": "RSA"}])
                for i in range(3):
                    await publish(nc, f"rsa.{i}", b"%d" % i)
                await wait_messages(nc, "RSB", 3)

        async def after():
            async with js_client(srv) as (nc, _):
                for i in range(3, 7):
                    await publish(nc, f"rsa.{i}", b"%d" % i)
                # the origin delivers in order: a duplicate of an earlier message would come before the last one
                await wait_messages(nc, "RSB", 7)
                got = await messages(nc, "RSB")
                assert [(subj, src) for _, subj, _, src in got] == [
                    (f"rsa.{i}", f"RSA {i + 1} > > rsa.{i}") for i in range(7)]

        run(before())
        srv.stop()
        srv.start()
        run(after(), timeout=30)
    finally:
        srv.stop()


# ---- across JetStream domains, over a leafnode --------------------------------------------------------------------


def cloud_conf(leaf_port: int) -> str:
    return f"jetstream {{ domain: cloud }}\nleafnodes {{ listen: 127.0.0.1:{leaf_port} }}\n"


def site_conf(leaf_port: int) -> str:
    return (f"jetstream {{ domain: site }}\n"
            f"leafnodes {{ remotes [ {{ url: \"nats-leaf://127.0.0.1:{leaf_port}\" }} ] }}\n")


def pytest_generate_tests(metafunc):
    if "cloud_side" in metafunc.fixturenames:
        sides = selected_sides(metafunc.config)
        # The outage soak takes 30-60 s per pair: CI runs it with our hub as the cloud, -m slow with nats-server too.
        soak = metafunc.function.__name__ == "test_source_from_another_domain_survives_link_outages"
        metafunc.parametrize("cloud_side", [pytest.param(s, marks=pytest.mark.slow) if soak and s == "nats" else s
                                            for s in sides], ids=[f"cloud-{s}" for s in sides])


@pytest.fixture
def domains(side, cloud_side, tmp_path):
    """A `site` server of kind `side`, leaf of a `cloud` server of kind `cloud_side`; both stopped by PID."""
    leaf_port = free_port()
    cloud = Server(cloud_side, config=cloud_conf(leaf_port), jetstream=True, workdir=tmp_path / "cloud")
    site = Server(side, config=site_conf(leaf_port), jetstream=True, workdir=tmp_path / "site")
    (tmp_path / "cloud").mkdir()
    (tmp_path / "site").mkdir()
    try:
        cloud.start()
        site.start()
        yield site, cloud
    finally:
        site.stop()
        cloud.stop()


async def wait_api(nc, subject: str, timeout: float = SYNC_TIMEOUT) -> dict:
    """A JetStream API answer across the leafnode, once the link is up."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            return await js_api(nc, subject)
        except (nats.errors.NoRespondersError, nats.errors.TimeoutError):
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.1)


def test_domains_across_a_leafnode(domains):
    site, cloud = domains

    async def go():
        async with js_client(cloud) as (nc_cloud, _), js_client(site) as (nc_site, _):
            # each domain's API is reached from the other server through its prefix, its own prefix stays local
            assert (await wait_api(nc_cloud, "$JS.site.API.INFO"))["domain"] == "site"
            assert (await wait_api(nc_site, "$JS.cloud.API.INFO"))["domain"] == "cloud"
            assert (await js_api(nc_cloud, f"{API}.INFO"))["domain"] == "cloud"
            assert (await js_api(nc_site, f"{API}.INFO"))["domain"] == "site"
            js_site = nc_cloud.jetstream(domain="site")
            await js_site.add_stream(name="ONSITE", subjects=["onsite.>"])
            ack = await nc_site.jetstream().publish("onsite.1", b"x")
            assert (ack.stream, ack.seq, ack.domain) == ("ONSITE", 1, "site")
            assert (await js_site.stream_info("ONSITE")).state.messages == 1
            names = await js_api(nc_cloud, f"{API}.STREAM.NAMES")
            assert "ONSITE" not in (names.get("streams") or [])

    run(go(), timeout=30)


def test_source_from_another_domain_survives_link_outages(domains):
    """The cloud sources the site's stream through `$JS.site.API`; records written while the cloud is down, and
    while the site is down and back, all arrive at the cloud exactly once."""
    site, cloud = domains
    ext = {"api": "$JS.site.API", "deliver": ""}

    async def setup():
        async with js_client(site) as (nc_site, _), js_client(cloud) as (nc_cloud, _):
            await create(nc_site, "RECS", subjects=["recs.>"])
            for i in range(5):
                await publish(nc_site, f"recs.{i}", b"%d" % i)
            await wait_api(nc_cloud, "$JS.site.API.INFO")
            resp = await create(nc_cloud, "AGG", sources=[{"name": "RECS", "external": ext}])
            assert resp["config"]["sources"] == [{"name": "RECS", "external": ext}]
            si = await wait_messages(nc_cloud, "AGG", 5)
            [src] = si["sources"]
            assert src["external"] == ext and src["lag"] == 0

    async def while_cloud_down():
        async with js_client(site) as (nc_site, _):
            for i in range(5, 10):
                await publish(nc_site, f"recs.{i}", b"%d" % i)

    async def while_site_back():
        async with js_client(site) as (nc_site, _):
            for i in range(10, 15):
                await publish(nc_site, f"recs.{i}", b"%d" % i)

    async def check(n: int):
        async with js_client(cloud) as (nc_cloud, _):
            await wait_messages(nc_cloud, "AGG", n, timeout=CATCH_UP_TIMEOUT)
            got = await messages(nc_cloud, "AGG")
            hash_name = got[0][3].split()[0]
            assert hash_name.startswith("RECS:") and len(hash_name) == len("RECS:") + 8
            assert [(subj, data, src) for _, subj, data, src in got] == [
                (f"recs.{i}", b"%d" % i, f"{hash_name} {i + 1} > > recs.{i}") for i in range(n)]

    run(setup(), timeout=30)
    cloud.stop()
    run(while_cloud_down())
    cloud.start()
    run(check(10), timeout=CATCH_UP_TIMEOUT + 10)
    site.stop()
    site.start()
    run(while_site_back())
    run(check(15), timeout=CATCH_UP_TIMEOUT + 10)


def test_a_leaf_with_jetstream_gets_no_plain_api_traffic(side, tmp_path):
    """A leaf whose CONNECT says it has JetStream (domain `leafd`) asks for `$JS.API.>`, `$KV.>` and our own
    `$JS.hub.API.>`: none of it is sent to it (nats-server's denyAllClientJs), other subjects are."""
    leaf_port = free_port()
    srv = Server(side, config=f"jetstream {{ domain: hub }}\nleafnodes {{ listen: 127.0.0.1:{leaf_port} }}\n",
                 jetstream=True, workdir=tmp_path)
    try:
        srv.start()
        r = Raw(leaf_port, auto_pong=True)
        opts = {"name": "rawleaf", "headers": True, "protocol": 1, "version": "2.15.1", "jetstream": True,
                "domain": "leafd"}
        r.send(b"CONNECT " + json.dumps(opts).encode() + b"\r\nPING\r\n")
        info = json.loads(r.expect(rb"INFO (\{.*?\}) ?\r\n").group(1))
        assert (info["jetstream"], info["domain"]) == (True, "hub")
        r.expect(rb".*?PONG\r\n")
        r.send(b"LS+ $JS.API.>\r\nLS+ $KV.>\r\nLS+ $JS.hub.API.>\r\nLS+ other.>\r\n")
        r.sync()

        async def traffic():
            async with js_client(srv) as (nc, _):
                assert (await js_api(nc, f"{API}.INFO"))["domain"] == "hub"  # answered here, once
                await nc.publish("$KV.b.k", b"v")
                await nc.publish("other.x", b"o")
                await nc.flush()

        # Once, under a loaded `make test`, nats-server sent the leaf no LMSG at all before the PONG: the round is
        # repeated until other.x arrives, and no round may bring anything else.
        got = []
        for _ in range(20):
            run(traffic())
            got += [f for f in r.frames_until_pong() if f[0] == "LMSG"]
            if got:
                break
        assert got == [("LMSG", "LMSG other.x 1")], got
        r.close()
    finally:
        srv.stop()

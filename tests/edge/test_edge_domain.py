"""An edge writing into another JetStream domain (issue 18 items 4 and 5), across three sites: a MicroPython edge ->
a `site` server (JetStream domain `site`, the edge's leafnode hub, itself a leaf of the cloud) -> a `cloud` server
(domain `cloud`). Site and cloud are nats-server and our hub in both orders, and our hub twice.

- A forward queue with `"domain": "cloud"` stores straight into the cloud's stream; a KV bucket with
  `"domain": "cloud"` syncs with the cloud's bucket both ways.
- The chain: the edge forwards into the site's stream, the cloud sources it through `$JS.site.API`; with the cloud
  down and then the edge's uplink down while records are written, every record reaches the cloud exactly once.
"""

from __future__ import annotations

import asyncio

import nats
import pytest

from tests.compat.harness import js_api, run, wait_until
from tests.edge.edgeharness import free_port, site_and_cloud
from tests.edge.fwdharness import add_stream, forward_config, msg_ids, payload_index, stream_messages, wait_drained
from tests.edge.kvharness import ctl, hub_value, kv_edge_config, start_edge, wait_for

# A source after an outage waits for its health check (10 s without news) and its retry backoff, in nats-server as
# in the hub; the edge's queue retries with its own backoff.
CATCH_UP_TIMEOUT = 60.0
CHAINS = [("hub", "nats"), ("nats", "hub"), ("hub", "hub")]
CHAIN_IDS = ["site-hub-cloud-nats", "site-nats-cloud-hub", "site-hub-cloud-hub"]


@pytest.fixture
def chain(request, tmp_path):
    """(site, cloud): the cloud with JetStream domain `cloud` and a leafnodes port; the site with domain `site`, its
    leaf, with a leafnodes port of its own for the edge (site.leaf_port). Both stopped by PID at teardown."""
    site_kind, cloud_kind = request.param
    with site_and_cloud(tmp_path, site_kind, cloud_kind, domains=True) as pair:
        yield pair


async def stream_names(url: str) -> list[str]:
    nc = await nats.connect(url, allow_reconnect=False)
    try:
        return (await js_api(nc, "$JS.API.STREAM.NAMES")).get("streams") or []
    finally:
        await nc.close()


def boot(e, n: int, start: int, tag: str, subjects: list[str]) -> None:
    """(Re)start the edge's app to publish records start .. start+n-1, and wait until it has them on flash."""
    first = len(e.lines)
    e.set_app(subjects=subjects, count=n, start=start, tag=tag)
    e.start()
    wait_until(lambda: f"edge: app done {n}" in list(e.lines)[first:], timeout=30,
               msg=f"the edge app published {n} records:\n{e.output()}")


@pytest.mark.parametrize("chain", CHAINS, indirect=True, ids=CHAIN_IDS)
def test_forward_queue_stores_into_the_cloud_domain(chain, fwd_edges):
    site, cloud = chain
    run(add_stream(cloud.url, "TELE", ["tele.>"]))
    e = fwd_edges(forward_config("e1", site.leaf_port, [{"subjects": ["tele.>"], "stream": "TELE",
                                                          "domain": "cloud"}], app="fwdapp"))
    boot(e, 20, 0, "b1", ["tele.a", "tele.b"])
    wait_drained(e, timeout=30)
    # the cloud goes away while the edge writes; everything arrives once it is back
    cloud.stop()
    e.stop()
    boot(e, 20, 20, "b2", ["tele.a", "tele.b"])
    cloud.start()
    wait_drained(e, timeout=CATCH_UP_TIMEOUT)
    msgs = run(stream_messages(cloud.url, "TELE"))
    assert sorted(payload_index(m)[1] for m in msgs) == list(range(40))
    assert msg_ids(msgs) == [f"e1-TELE-{i}" for i in range(1, 41)]
    assert run(stream_names(site.url)) == []  # nothing was stored at the site


@pytest.mark.parametrize("chain", CHAINS, indirect=True, ids=CHAIN_IDS)
def test_kv_bucket_in_the_cloud_domain_syncs_both_ways(chain, tmp_path):
    site, cloud = chain
    started: list = []

    async def body():
        nc = await nats.connect(cloud.url)
        try:
            kv = await nc.jetstream(timeout=5).create_key_value(bucket="cfg", direct=True)
            await kv.put("from.cloud", b"c1")
            cfg = kv_edge_config("e1", free_port(), site.leaf_port, {"cfg": {"domain": "cloud"}})
            e = start_edge(cfg, tmp_path / "e1", started)
            e.wait_line(r"kv synced bucket=cfg", timeout=15)
            assert (await ctl(e, "get", bucket="cfg", key="from.cloud"))["value"] == "c1"
            await ctl(e, "put", bucket="cfg", key="from.edge", value="e1", flush=True)
            await wait_for(lambda: _eq(hub_value(kv, "from.edge"), b"e1"), 15, "the edge's write in the cloud bucket")
            await kv.put("from.cloud", b"c2")

            async def edge_has_c2():
                return (await ctl(e, "get", bucket="cfg", key="from.cloud"))["value"] == "c2"

            await wait_for(edge_has_c2, 15, "the cloud's second write on the edge")
            assert await stream_names(site.url) == []  # the bucket lives in the cloud only
        finally:
            await nc.close()

    try:
        run(body(), 60)
    finally:
        for e in started:
            e.stop()


async def _eq(value, expected) -> bool:
    return (await value) == expected


@pytest.mark.parametrize("chain", [pytest.param(c, marks=pytest.mark.slow) if c == ("hub", "nats") else c
                                   for c in CHAINS], indirect=True, ids=CHAIN_IDS)  # that pair takes ~45 s: -m slow
def test_three_sites_every_record_once_at_the_cloud(chain, fwd_edges):
    """The edge forwards into the site's stream RECS, which the cloud sources; the links are cut twice while
    records are written (the cloud stopped, then the edge's uplink), and the cloud ends with each record once."""
    site, cloud = chain
    run(add_stream(site.url, "RECS", ["recs.>"]))

    async def source_it():
        nc = await nats.connect(cloud.url)
        try:
            resp = await js_api(nc, "$JS.API.STREAM.CREATE.AGG", {
                "name": "AGG", "sources": [{"name": "RECS", "external": {"api": "$JS.site.API", "deliver": ""}}]})
            assert "error" not in resp, resp
        finally:
            await nc.close()

    run(source_it())
    e = fwd_edges(forward_config("e1", site.leaf_port, [{"subjects": ["recs.>"], "stream": "RECS"}], app="fwdapp"))
    boot(e, 30, 0, "b1", ["recs.a", "recs.b"])
    wait_drained(e, timeout=30)
    cloud.stop()  # the site -> cloud link is down
    e.stop()
    boot(e, 30, 30, "b2", ["recs.a", "recs.b"])
    wait_drained(e, timeout=30)
    cloud.start()
    site.stop()  # the edge's uplink is down (and the site's link to the cloud)
    e.stop()
    boot(e, 30, 60, "b3", ["recs.a", "recs.b"])
    site.start()
    wait_drained(e, timeout=CATCH_UP_TIMEOUT)

    async def at_cloud():
        deadline = asyncio.get_running_loop().time() + CATCH_UP_TIMEOUT
        while True:
            msgs = await stream_messages(cloud.url, "AGG")
            if len(msgs) >= 90 or asyncio.get_running_loop().time() > deadline:
                return msgs
            await asyncio.sleep(0.2)

    msgs = run(at_cloud(), CATCH_UP_TIMEOUT + 10)
    assert sorted(payload_index(m)[1] for m in msgs) == list(range(90)), f"{len(msgs)} records at the cloud"
    assert msg_ids(msgs) == [f"e1-RECS-{i}" for i in range(1, 91)]

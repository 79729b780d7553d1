"""One trace across three servers of mixed kinds: a MicroPython edge -> a site hub (the edge's leafnode hub, itself a
leaf of the cloud) -> a cloud hub with a JetStream stream, traced with `natsedge trace` from the edge's LAN port.

The site and cloud are nats-server and our hub in both orders (and our hub twice): each server on the path sends its
own event, linked by hop (`1` from the edge, `1.1` from the site), and the cloud's shows the stream store. The
command runs as a user runs it (a process; its --json events and its tree read).
"""

from __future__ import annotations

import json

import nats
import pytest

from tests.compat.harness import run
from tests.compat.test_trace_cli import natsedge_trace, traced
from tests.edge.edgeharness import edge_config, free_port, probe_until_received, site_and_cloud
from tests.edge.fwdharness import add_stream


@pytest.fixture
def chain(request, tmp_path):
    """(site, cloud) servers: the cloud with JetStream and a leafnodes port, the site its leaf with a leafnodes port
    of its own for the edge. Both stopped by PID at teardown."""
    site_kind, cloud_kind = request.param
    with site_and_cloud(tmp_path, site_kind, cloud_kind) as pair:
        yield pair


@pytest.mark.parametrize("chain", [("hub", "nats"), ("nats", "hub"), ("hub", "hub")], indirect=True,
                         ids=["site-hub-cloud-nats", "site-nats-cloud-hub", "site-hub-cloud-hub"])
def test_edge_site_cloud_and_stream_make_one_trace(chain, edges):
    site, cloud = chain
    run(add_stream(cloud.url, "TELE", ["tele.>"]))
    e = edges(edge_config("edge1", listen=free_port(), hub_port=site.leaf_port, ping_interval=1))
    e.wait_line(r"uplink up", timeout=10)

    async def interest_reaches_the_edge():
        # the stream's interest travels cloud -> site -> edge; a subscriber at the cloud sees a probe cross
        at_cloud = await nats.connect(cloud.url, allow_reconnect=False)
        lan = await nats.connect(f"nats://127.0.0.1:{e.cfg['listen'].rsplit(':', 1)[1]}", allow_reconnect=False)
        try:
            sub = await at_cloud.subscribe("tele.>")
            await probe_until_received(lan, sub, "tele.probe", timeout=10)
        finally:
            await lan.close()
            await at_cloud.close()

    run(interest_reaches_the_edge())
    lan_url = f"nats://127.0.0.1:{e.cfg['listen'].rsplit(':', 1)[1]}"
    done = natsedge_trace("tele.kitchen", "21.5", "--server", lan_url, "--json")
    assert done.returncode == 0, (done.stdout, done.stderr)
    by_server = {ev["server"]["name"]: ev for ev in json.loads(done.stdout)}
    assert set(by_server) == {"edge1", "site", "cloud"}, by_server

    edge, at_site, at_cloud = by_server["edge1"], by_server["site"], by_server["cloud"]
    assert edge["events"][0]["type"] == "in" and edge["events"][0]["kind"] == 0  # the trace command, a LAN client
    (up,) = [x for x in edge["events"] if x["type"] == "eg"]
    assert (up["kind"], up["name"], up["hop"]) == (4, "site", "1")
    assert at_site["request"]["header"]["Nats-Trace-Hop"] == ["1"]
    assert (at_site["events"][0]["kind"], at_site["events"][0]["name"]) == (4, "edge1")
    (to_cloud,) = [x for x in at_site["events"] if x["type"] == "eg"]
    assert (to_cloud["kind"], to_cloud["name"], to_cloud["hop"]) == (4, "cloud", "1.1")
    assert at_cloud["request"]["header"]["Nats-Trace-Hop"] == ["1.1"]
    assert (at_cloud["events"][0]["kind"], at_cloud["events"][0]["name"]) == (4, "site")
    assert [(x["type"], x.get("stream"), x.get("subject")) for x in at_cloud["events"] if x["type"] == "js"] == [
        ("js", "TELE", "tele.kitchen")]

    lines = traced("tele.kitchen", "21.6", "--server", lan_url)
    servers = [ln for ln in lines if ln.startswith("Server ")]
    assert [s.split('"')[1] for s in servers] == ["edge1", "site", "cloud"], lines
    assert lines[-1].endswith("Stored in: TELE"), lines
    assert not any("never answered" in ln for ln in lines), lines

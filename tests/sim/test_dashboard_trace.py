"""The dashboard's trace view, `/trace.json`: a traced message sent through the dashboard's own connection to a running
server of each side, the tree's lines and raw events in the answer, and the one-line errors (no connection, a bad
subject, busy). The page's form is driven in Chromium in test_dashboard_browser.py."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import urlencode

from sim.client import Client
from sim.dashboard import MAX_TRACES, Dashboard
from sim.hub import http_get
from tests.compat.harness import Server


async def _empty_state() -> dict[str, Any]:
    return {"hub": {}, "edges": []}


async def _ask(dash: Dashboard, **query: str) -> dict[str, Any]:
    status, body = await http_get(f"{dash.url}trace.json?{urlencode(query)}", timeout=10)
    assert status == 200 and isinstance(body, dict), (status, body)
    return body


def test_trace_view_through_the_dashboards_connection(side, tmp_path) -> None:
    srv = Server(side, config="server_name: viewed\n", workdir=tmp_path).start()
    try:
        with srv.client(name="sub-app") as c:
            c.send(b"SUB app.view 1\r\nSUB app.view qg 2\r\n")
            c.sync()

            async def go() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
                client = Client(srv.url, name="natsedge-dashboard")
                client.start()
                dash = Dashboard(_empty_state, "127.0.0.1", 0, hub_client=client)
                await dash.start()
                try:
                    assert await client.wait_connected(10), client.last_error
                    delivered = await _ask(dash, subject="app.view", payload="seen")
                    only = await _ask(dash, subject="app.view", payload="not seen", only="1")
                    bad = await _ask(dash, subject="app.*")
                    return delivered, only, bad
                finally:
                    await dash.close()
                    await client.close()

            delivered, only, bad = asyncio.run(asyncio.wait_for(go(), 40))
            assert [m.payload for m in c.msgs_until_pong()] == [b"seen", b"seen"]  # trace-only delivered nothing
    finally:
        srv.stop()
    assert delivered["error"] is None and delivered["subject"] == "app.view" and not delivered["only"]
    lines = [ln.strip() for ln in delivered["lines"]]
    assert lines[0] == 'Trace of a message to subject "app.view"' and 'Server "viewed"' in lines[2], lines
    assert lines[3].startswith('<-- from client "natsedge-dashboard"')
    assert lines[4].startswith('--C client "sub-app"') and 'queue:"qg"' in lines[5]
    (event,) = delivered["events"]
    assert event["server"]["name"] == "viewed" and [e["type"] for e in event["events"]] == ["in", "eg", "eg"]
    assert only["error"] is None and only["only"]
    assert only["lines"][0].endswith("(trace only: not delivered to clients)")
    assert bad["error"].startswith("invalid subject 'app.*'") and bad["lines"] == [] and bad["events"] == []


def test_trace_view_without_a_connection_or_when_busy() -> None:
    async def go() -> tuple[dict[str, Any], dict[str, Any]]:
        dash = Dashboard(_empty_state, "127.0.0.1", 0)
        await dash.start()
        try:
            none = await _ask(dash, subject="a.b")
            dash._traces = MAX_TRACES  # as many running as allowed
            busy = await _ask(dash, subject="a.b")
            return none, busy
        finally:
            await dash.close()

    none, busy = asyncio.run(asyncio.wait_for(go(), 20))
    assert none["error"] == "the dashboard has no connection to the hub: start it with --nats URL"
    assert busy["error"] == "busy: another trace is running, try again"

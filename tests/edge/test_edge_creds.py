"""An edge joins a hub that requires nkey or JWT credentials (hub.creds, hub.nkey): nats-server and our hub in operator
mode with a memory resolver (tests/jwtmint.py), and with an nkey on their leafnode port.

The edge runs as the MicroPython unix port, frozen into the 32-bit build (`device`), and under CPython (PyNaCl
signs there).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import nats
import pytest

from tests.compat.harness import run
from tests.edge.edgeharness import (
    Runtime,
    edge_config,
    free_port,
    micropython,
    next_real,
    probe_until_received,
    set_runtime,
)
from tests.jwtmint import Key, Operator, creds_text


@pytest.fixture
def cpython_edge():
    set_runtime(Runtime("cpython", sys.executable, cpython=True))
    yield
    set_runtime(None)


def _both_ways(hub_url, edge_url, **hub_opts):
    """nats-py on the hub (with hub_opts, e.g. user_credentials) and on the edge's LAN port: a message each way."""
    async def body():
        h = await nats.connect(hub_url, allow_reconnect=False, **hub_opts)
        e = await nats.connect(edge_url, allow_reconnect=False)
        up = await h.subscribe("up.>")
        down = await e.subscribe("down.>")
        await probe_until_received(e, up, "up.probe")
        await probe_until_received(h, down, "down.probe")
        await e.publish("up.t", b"21.5")
        await h.publish("down.cmd", b"reboot")
        got_up, got_down = await next_real(up), await next_real(down)
        assert (got_up.subject, got_up.data) == ("up.t", b"21.5")
        assert (got_down.subject, got_down.data) == ("down.cmd", b"reboot")
        await h.close()
        await e.close()

    run(body())


def _operator_hub(hubs, op, acc):
    return hubs(top=op.server_conf([acc]))


def _edge_cfg(hub, creds=None, nkey=None):
    cfg = edge_config("edge1", listen=free_port(), hub_port=hub.leaf_port)
    cfg["hub"].update({k: v for k, v in (("creds", creds), ("nkey", nkey)) if v is not None})
    return cfg


def _joins_with_creds(hubs, edges, tmp_path):
    op = Operator()
    acc = op.account("A")
    (tmp_path / "edge.creds").write_text(acc.user("edge").creds())
    (tmp_path / "app.creds").write_text(acc.user("app").creds())
    hub = _operator_hub(hubs, op, acc)
    edge = edges(_edge_cfg(hub, creds=str(tmp_path / "edge.creds")))
    edge.wait_line(r"uplink up", timeout=20)
    _both_ways(hub.url, edge.url, user_credentials=str(tmp_path / "app.creds"))
    assert edge.count(r"uplink down") == 0, edge.output()


@pytest.mark.device
def test_edge_joins_operator_mode_hub_with_creds_file(hubs, edges, tmp_path):
    _joins_with_creds(hubs, edges, tmp_path)


def test_cpython_edge_joins_operator_mode_hub_with_creds_file(hubs, edges, tmp_path, cpython_edge):
    _joins_with_creds(hubs, edges, tmp_path)


def test_edge_joins_hub_with_nkey_seed_file_and_inline_seed(hubs, edges, tmp_path):
    key = Key("user")
    hub = hubs(extra=f'authorization {{ nkey: "{key.public}" }}')
    (tmp_path / "edge.nk").write_text(key.seed + "\n")
    edge = edges(_edge_cfg(hub, nkey=str(tmp_path / "edge.nk")))
    edge.wait_line(r"uplink up", timeout=20)
    _both_ways(hub.url, edge.url)
    inline = edges(edge_config("edge2", listen=free_port(), hub_port=hub.leaf_port, hub={"nkey": key.seed}))
    inline.wait_line(r"uplink up", timeout=20)
    assert key.seed not in "\n".join(inline.lines), "the seed must never be logged"


def test_wrong_expired_revoked_and_malformed_creds_are_one_line_and_retried(hubs, edges, tmp_path):
    op = Operator()
    acc, stranger = op.account("A"), op.account("B")
    revoked = acc.user("edge", issued_at=int(time.time()) - 60)
    acc.revocations[revoked.public] = int(time.time())  # JWTs of this key issued until now are revoked
    acc.sign()
    hub = _operator_hub(hubs, op, acc)
    creds = tmp_path / "edge.creds"
    cases = [
        ("revoked", revoked.creds(),
         r"reason=-ERR 'Authorization Violation' \(hub\.creds .*edge\.creds: wrong, expired or revoked\?\)$"),
        ("unknown account", stranger.user("edge").creds(),
         r"reason=-ERR 'Authorization Violation' \(hub\.creds .*edge\.creds: wrong, expired or revoked\?\)$"),
        ("expired", acc.user("edge", expires=int(time.time()) - 60).creds(),
         r"reason=-ERR 'Authorization Violation' \(hub\.creds .*edge\.creds: wrong, expired or revoked\?\)$"),
        ("no seed", acc.user("edge").jwt + "\n",
         r"reason=creds: hub\.creds .*edge\.creds: not a \.creds file \(needs a user JWT and a seed block\)$"),
        ("bad checksum", creds_text(acc.user("edge").jwt, "SUA" + "A" * 55),
         r"reason=creds: hub\.creds .*edge\.creds: not an nkey seed \(bad base32, length or checksum\)$"),
        ("JWT of another key", creds_text(acc.user("edge").jwt, acc.user("other").key.seed),
         r"reason=creds: hub\.creds .*edge\.creds: the JWT is for another key than the seed \(U[A-Z2-7]{55}\)$"),
    ]
    creds.write_text(cases[0][1])
    edge = edges(_edge_cfg(hub, creds=str(creds)))
    for what, text, line in cases:
        creds.write_text(text)  # read again at the next dial: no restart needed
        start = len(edge.lines)
        edge.wait_line(r"^edge: uplink down .*" + line, timeout=20, start=start)
        edge.wait_line(r"^edge: uplink down .*" + line, timeout=20, start=edge.last_index + 1)  # and retried
        assert edge.alive(), f"{what}: the edge exited\n{edge.output()}"
    assert not [ln for ln in edge.lines if "Traceback" in ln], edge.output()
    creds.write_text(acc.user("edge").creds())  # fixed in place: the next retry joins
    edge.wait_line(r"uplink up", timeout=20)


def test_creds_config_errors_are_one_line():
    from edge.leaf.config import ConfigError, check

    base = {"name": "e", "hub": {"url": "nats-leaf://127.0.0.1:7422"}}
    for hub, msg in [
        ({"creds": 5}, 'config: "hub.creds": expected a non-empty string or null, got 5'),
        ({"nkey": ""}, 'config: "hub.nkey": expected a non-empty string or null, got ""'),
        ({"creds": "a.creds", "nkey": "b.nk"},
         'config: "hub.nkey": expected null when hub.creds is set (the .creds file holds the seed), got "b.nk"'),
        ({"creds": "a.creds", "token": "t"},
         'config: "hub.creds": expected null when hub.user or hub.token is set, got "a.creds"'),
        ({"nkey": "b.nk", "user": "u"},
         'config: "hub.nkey": expected null when hub.user or hub.token is set, got "b.nk"'),
    ]:
        with pytest.raises(ConfigError) as e:
            check({**base, "hub": {**base["hub"], **hub}})
        assert str(e.value) == msg
    assert check({**base, "hub": {**base["hub"], "creds": "a.creds"}})["hub"]["signer"] == ("creds", "a.creds")


def test_device_without_the_auth_package_says_so_in_one_line(tmp_path, mpy_tree):
    # mpy_tree: the core edge as a bundle without --with auth ships it (tests/edge/conftest.py)
    for key, extra in (("hub.creds", {"hub": {"url": "nats-leaf://127.0.0.1:7422", "creds": "e.creds"}}),
                       ("authorization", {"listen": "127.0.0.1:4222", "authorization": {"token": "t"}})):
        cfg = tmp_path / "e.json"
        cfg.write_text(json.dumps({"name": "e1", **extra}))
        proc = subprocess.run([micropython(), "-m", "edge", str(cfg)], cwd=str(tmp_path), capture_output=True,
                              text=True, timeout=30, env=dict(os.environ, MICROPYPATH=mpy_tree[0]))
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert proc.stderr == (f'config: "{key}" needs the edge.auth package, which this device lacks (natsedge '
                               "firmware bundle --with auth)\n")

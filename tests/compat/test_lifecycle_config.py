"""Signals (shutdown, lame duck) and configuration files (syntax, include, variables, errors)."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import socket
import subprocess
import time

import pytest

from .harness import Raw, pub, refuses_to_start, run, settle, wait_until

# ---------------------------------------------------------------------------------------------- signals


def _wait_exit(s, timeout=5.0):
    try:
        return s.proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{s.side} server still running {timeout}s after the signal\n{s.output()}")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_shutdown_closes_clients(fresh, sig):
    s = fresh()
    c = s.client()
    c.send(b"SUB x 1\r\n")
    c.sync()
    s.signal(sig)
    c.expect_closed(timeout=5)
    assert _wait_exit(s) == 0
    c.close()
    with pytest.raises(OSError):
        Raw(s.port, read_info=False).close()


def test_sigterm_nats_py_sees_close(fresh):
    s = fresh()

    async def body():
        closed = asyncio.Event()
        disconnected = asyncio.Event()

        async def on_closed():
            closed.set()

        async def on_disc():
            disconnected.set()

        nc = await s.nc(closed_cb=on_closed, disconnected_cb=on_disc)
        await nc.subscribe("x")
        await settle(nc)
        s.signal(signal.SIGTERM)
        await asyncio.wait_for(disconnected.wait(), 5)
        await asyncio.wait_for(closed.wait(), 5)
        assert nc.is_closed

    run(body())
    assert _wait_exit(s) == 0


LDM_CONF = 'lame_duck_grace_period: "1s"\nlame_duck_duration: "30s"\n'


def test_lame_duck_mode_sigusr2(fresh):
    s = fresh(LDM_CONF)
    c = s.client()
    s.signal(signal.SIGUSR2)
    m = c.expect(rb"INFO (\{[^\r\n]*\}) \r\n", timeout=5)
    info = json.loads(m.group(1))
    assert info["ldm"] is True
    assert info["server_id"] == c.info["server_id"]

    def refused():
        try:
            Raw(s.port, read_info=False).close()
            return False
        except OSError:
            return True

    wait_until(refused, timeout=3, msg="listener closed in lame duck mode")
    # after the grace period the remaining client is closed and the server exits
    c.expect_closed(timeout=10)
    assert _wait_exit(s, timeout=10) == 0


def test_lame_duck_nats_py_callback(fresh):
    s = fresh(LDM_CONF)

    async def body():
        ldm = asyncio.Event()

        async def on_ldm():
            ldm.set()

        nc = await s.nc(lame_duck_mode_cb=on_ldm)
        try:
            await settle(nc)
            s.signal(signal.SIGUSR2)
            await asyncio.wait_for(ldm.wait(), 5)
        finally:
            await nc.close()

    run(body())


# ---------------------------------------------------------------------------------------------- config


def test_config_bad_value_names_line(fresh):
    out = refuses_to_start(fresh, 'server_name: x\n\nport: "abc"\n')
    assert re.search(r"(\.conf:3:|line 3\b)", out), out


def test_config_unknown_key_names_line(fresh):
    out = refuses_to_start(fresh, "max_payload: 1024\nbogus_key: 5\n")
    assert re.search(r"(\.conf:2:|line 2\b)", out), out
    assert "bogus_key" in out


def test_config_parse_error(fresh):
    out = refuses_to_start(fresh, "authorization {\n  user: a\n")
    assert re.search(r"(line \d+|\.conf:\d+:)", out), out


def test_config_max_payload_above_max_pending(fresh):
    out = refuses_to_start(fresh, "max_payload: 1024\nmax_pending: 512\n")
    assert "max_payload" in out and "max_pending" in out


@pytest.mark.parametrize("listener", ["http_port: {port}", "cluster { listen: 127.0.0.1:{port} }"])
def test_a_port_in_use_is_named_in_the_error(fresh, listener):
    """The listener that cannot bind names its own address (a taken monitor port is not the client port's fault)."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = refuses_to_start(fresh, listener.replace("{port}", str(port)) + "\n")
    lines = [line for line in out.splitlines() if "in use" in line]
    assert lines and all(f"127.0.0.1:{port}" in line for line in lines), out


def test_config_missing_include(fresh):
    out = refuses_to_start(fresh, 'include "./does-not-exist.conf"\n')
    assert "does-not-exist.conf" in out


def test_config_include_and_variables(fresh):
    main = '# main file\nMAXP = 2048\nmax_payload: $MAXP\ninclude "./auth.conf"\n'
    auth = 'TOK = "t0ken"\nauthorization {\n  token: $TOK\n}\n'
    s = fresh(main, files={"auth.conf": auth})
    with s.raw() as c:
        assert c.info["max_payload"] == 2048
        assert c.info["auth_required"] is True
        c.connect(auth_token="t0ken")
        c.send(b"SUB v 1\r\n" + pub("v", b"ok") + b"PING\r\n")
        c.expect(rb"MSG v 1 2\r\nok\r\nPONG\r\n")
    with s.raw() as c:
        c.connect(auth_token="$TOK")
        c.expect_err("Authorization Violation")


def test_config_undefined_variable(fresh):
    out = refuses_to_start(fresh, "max_payload: $NOT_DEFINED_ANYWHERE\n")
    assert "NOT_DEFINED_ANYWHERE" in out


def test_config_syntax_forms(fresh):
    conf = (
        "# hash comment\n"
        "// slash comment\n"
        "server_name = compat-syntax\n"
        "max_payload 2KB\n"
        "max_connections: 100;\n"
        "authorization {\n"
        '  user = "u1"\n'
        "  password: 'p w'\n"
        "}\n"
    )
    s = fresh(conf, monitor=True)
    with s.raw() as c:
        assert c.info["server_name"] == "compat-syntax"
        assert c.info["max_payload"] == 2048
        assert c.info["auth_required"] is True
        c.handshake(user="u1", **{"pass": "p w"})
    varz = s.http_get("/varz")
    assert varz["server_name"] == "compat-syntax"
    assert varz["max_connections"] == 100


def test_config_server_name_defaults_to_id(srv):
    with srv.raw() as c:
        assert c.info.get("server_name", c.info["server_id"]) == c.info["server_id"]


def test_config_quoted_durations_and_nested_users(fresh):
    conf = (
        'ping_interval: "2m"\n'
        "write_deadline: \"5s\"\n"
        "authorization {\n"
        "  timeout: 0.5\n"
        "  users: [\n"
        "    {user: x, password: y}\n"
        "    {user: \"z\", password: \"w\", permissions: {publish: {deny: [\"no.>\"]}}}\n"
        "  ]\n"
        "}\n"
    )
    s = fresh(conf)
    with s.client(user="z", **{"pass": "w"}) as c:
        c.send(pub("no.way", b"1") + b"PING\r\n")
        c.expect(rb"-ERR 'Permissions Violation for Publish to \"no\.way\"'\r\nPONG\r\n")
    with s.raw() as c:
        t0 = time.monotonic()
        c.expect_err("Authentication Timeout", timeout=3)
        assert time.monotonic() - t0 < 2.0

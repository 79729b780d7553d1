"""TLS on the client port, against nats-server and our hub: `tls { cert_file, key_file, ca_file, verify, timeout,
handshake_first }` and the --tls* flags, the INFO flags, INFO-then-upgrade and handshake-first, clients that do
not speak TLS, client certificates, and nats-py over TLS. Certificates are made here (tests/certs.py)."""

from __future__ import annotations

import json
import ssl

import nats
import pytest

from tests.certs import cert
from tests.compat.harness import Raw, Server, collect, free_port, pub, refuses_to_start, run, settle, wait_until


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A CA, a server certificate for localhost/127.0.0.1 and a client certificate it signed, and a client
    certificate of another CA."""
    d = tmp_path_factory.mktemp("pki")
    cert(d, "ca", ca_key_usage=True)
    cert(d, "server", cn="localhost", sans=["localhost", "127.0.0.1"], issuer="ca", ca=False, server_client=True)
    cert(d, "client", cn="app", sans=["app@example.net"], issuer="ca", ca=False, server_client=True)
    cert(d, "device", cn="device-7", issuer="ca", ca=False, server_client=True)
    cert(d, "stranger", cn="stranger", issuer="ca", ca=False, server_client=True)
    cert(d, "rogue-ca", ca_key_usage=True)
    cert(d, "rogue", cn="app", issuer="rogue-ca", ca=False, server_client=True)
    return d


def tls_conf(d, extra: str = "") -> str:
    return (f'tls {{\n  cert_file: "{d / "server.pem"}"\n  key_file: "{d / "server-key.pem"}"\n'
            f'  ca_file: "{d / "ca.pem"}"\n{extra}}}\n')


def client_ctx(d, client: str | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(d / "ca.pem"))
    if client is not None:
        ctx.load_cert_chain(str(d / f"{client}.pem"), str(d / f"{client}-key.pem"))
    return ctx


def upgrade(r: Raw, ctx: ssl.SSLContext) -> Raw:
    r.sock = ctx.wrap_socket(r.sock, server_hostname="localhost")
    return r


def test_info_flags(shared, pki):
    with shared(tls_conf(pki)).raw() as c:
        assert c.info["tls_required"] is True and "tls_verify" not in c.info
    with shared(tls_conf(pki, "  verify: true\n")).raw() as c:
        assert c.info["tls_required"] is True and c.info["tls_verify"] is True


def test_varz(shared, pki):
    varz = shared(tls_conf(pki, "  verify: true\n  timeout: 3\n"), monitor=True).http_get("/varz")
    assert (varz["tls_required"], varz["tls_verify"], varz["tls_timeout"]) == (True, True, 3)
    assert varz["auth_timeout"] == 4  # the TLS timeout + 1 s, unless authorization sets one


def test_info_then_upgrade(shared, pki):
    s = shared(tls_conf(pki))
    with upgrade(s.raw(), client_ctx(pki)) as c:
        c.handshake()
        c.send(b"SUB t 1\r\n" + pub("t", b"over tls") + b"PING\r\n")
        c.expect(rb"MSG t 1 8\r\nover tls\r\nPONG\r\n")


def test_plain_text_after_info_is_closed_without_reply(shared, pki):
    s = shared(tls_conf(pki))
    with s.raw() as c:
        c.send(b'CONNECT {"verbose":false}\r\nPING\r\n')
        assert c.expect_closed(timeout=5) == b""


def test_handshake_timeout(shared, pki):
    s = shared(tls_conf(pki, "  timeout: 0.5\n"))
    with s.raw() as c:
        assert c.expect_closed(timeout=5) == b""


@pytest.mark.parametrize("client", [None, "rogue"], ids=["no-client-cert", "other-ca"])
def test_verify_refuses_clients_without_a_trusted_certificate(shared, pki, client):
    s = shared(tls_conf(pki, "  verify: true\n"))
    c = s.raw()
    try:
        # TLS 1.3 reports a refused client certificate after the handshake, on the first read
        with pytest.raises((ssl.SSLError, ConnectionError)):
            upgrade(c, client_ctx(pki, client))
            c.send(b"CONNECT {}\r\nPING\r\n")
            c.sock.settimeout(5)
            while c.sock.recv(4096):
                pass
            raise ConnectionError("closed")
    finally:
        c.close()


def test_verify_accepts_a_trusted_client_certificate(shared, pki):
    s = shared(tls_conf(pki, "  verify: true\n"))
    with upgrade(s.raw(), client_ctx(pki, "client")) as c:
        c.handshake()
        c.sync()


def tls_first_server(fresh, pki, extra: str = "") -> Server:
    """A handshake_first server: it writes nothing in plain text, so it is ready when a TLS client gets its INFO
    (the harness waits for a plain-text INFO)."""
    s = fresh(tls_conf(pki, "  handshake_first: true\n" + extra), wait=False)
    s.port = free_port()
    s.spawn()

    def ready():
        assert s.alive(), s.output()
        try:
            with upgrade(Raw(s.port, read_info=False, timeout=0.5), client_ctx(pki, "client")) as c:
                s.info = json.loads(c.expect(rb"INFO (\{.*?\}) ?\r\n").group(1))
                return True
        except (OSError, pytest.fail.Exception):
            return False

    wait_until(ready, timeout=10, msg="the handshake_first server")
    return s


def test_handshake_first(fresh, pki):
    s = tls_first_server(fresh, pki)
    assert s.info["tls_required"] is True
    with upgrade(Raw(s.port, read_info=False), client_ctx(pki)) as c:
        c.expect(rb"INFO (\{.*?\}) ?\r\n")
        c.handshake()
        c.sync()


def test_handshake_first_sends_nothing_in_plain_text(fresh, pki):
    s = tls_first_server(fresh, pki, "  timeout: 0.5\n")
    with Raw(s.port, read_info=False) as c:
        assert c.expect_closed(timeout=5) == b""


def test_auth_over_tls(shared, pki):
    s = shared(tls_conf(pki) + "authorization { user: u, password: p }\n")
    with upgrade(s.raw(), client_ctx(pki)) as c:
        assert c.info["auth_required"] is True
        c.connect(user="u", **{"pass": "wrong"})
        c.expect_err("Authorization Violation")
    with upgrade(s.raw(), client_ctx(pki)) as c:
        c.handshake(user="u", **{"pass": "p"})
        c.sync()


@pytest.mark.parametrize("handshake_first", [False, True], ids=["info-first", "handshake-first"])
def test_nats_py_over_tls(shared, fresh, pki, handshake_first):
    s = tls_first_server(fresh, pki, "  verify: true\n") if handshake_first \
        else shared(tls_conf(pki, "  verify: true\n"))

    async def body():
        nc = await nats.connect(f"tls://localhost:{s.port}", tls=client_ctx(pki, "client"),
                                tls_handshake_first=handshake_first, allow_reconnect=False, connect_timeout=2)
        try:
            sub = await nc.subscribe("secure")
            await settle(nc)
            await nc.publish("secure", b"s3cret")
            assert (await collect(sub, 1))[0].data == b"s3cret"
        finally:
            await nc.close()

    run(body())


MAP_USERS = """\
authorization { users = [
  { user: "app@example.net", permissions: { publish: "app.>" } }
  { user: "CN=device-7", permissions: { publish: "device.>" } }
] }
"""


@pytest.mark.parametrize(("client", "allowed", "denied"), [
    ("client", "app.x", "device.x"),  # by its e-mail SAN
    ("device", "device.x", "app.x"),  # by its subject
])
def test_verify_and_map(shared, pki, client, allowed, denied):
    s = shared(tls_conf(pki, "  verify_and_map: true\n") + MAP_USERS)
    with upgrade(s.raw(), client_ctx(pki, client)) as c:
        assert c.info["tls_verify"] is True
        c.handshake(user="ignored-when-mapping")
        c.send(pub(allowed, b"x") + pub(denied, b"x") + b"PING\r\n")
        c.expect(rb"-ERR 'Permissions Violation for Publish to \"%s\"'\r\nPONG\r\n" % denied.encode())


def test_verify_and_map_refuses_an_unmapped_certificate(shared, pki):
    s = shared(tls_conf(pki, "  verify_and_map: true\n") + MAP_USERS)
    with upgrade(s.raw(), client_ctx(pki, "stranger")) as c:
        c.connect(user="app@example.net")
        c.expect_err("Authorization Violation")


class _FlagServer(Server):
    """A server started with extra command-line flags (the harness passes none of its own for TLS)."""

    def __init__(self, side: str, flags: list[str], **kw):
        super().__init__(side, **kw)
        self.flags = flags

    def command(self) -> list[str]:
        return super().command() + self.flags


def test_tls_flags(side, pki, tmp_path, request):
    flags = ["--tls", "--tlscert", str(pki / "server.pem"), "--tlskey", str(pki / "server-key.pem"),
             "--tlsverify", "--tlscacert", str(pki / "ca.pem")]
    s = _FlagServer(side, flags, workdir=tmp_path)
    request.addfinalizer(s.stop)
    s.start()
    assert s.info["tls_required"] is True and s.info["tls_verify"] is True
    with upgrade(s.raw(), client_ctx(pki, "client")) as c:
        c.handshake()
        c.sync()


@pytest.mark.parametrize(("flags", "error"), [
    (["--tls"], "TLS Server certificate must be present and valid"),
    (["--tlsverify", "--tlscert", "x.pem"], "TLS Server private key must be present and valid"),
], ids=["no-cert", "no-key"])
def test_tls_flags_without_certificate(side, tmp_path, request, flags, error):
    s = _FlagServer(side, flags, workdir=tmp_path)
    request.addfinalizer(s.stop)
    s.spawn()
    wait_until(lambda: not s.alive(), timeout=10, msg="the server to refuse the flags")
    assert s.proc.returncode != 0 and error in s.output()


@pytest.mark.parametrize(("block", "error"), [
    ('tls { key_file: "k.pem" }', "missing 'cert_file' in TLS configuration"),
    ('tls { cert_file: "c.pem" }', "missing 'key_file' in TLS configuration"),
    ('tls { cert_file: "c.pem", key_file: "k.pem", handshake_first: "bogus" }', '"handshake_first"'),
    ('tls { cert_file: "/nonexistent/c.pem", key_file: "/nonexistent/k.pem" }', "/nonexistent/c.pem"),
], ids=["no-cert", "no-key", "bad-handshake-first", "missing-file"])
def test_tls_config_errors(fresh, block, error):
    assert error in refuses_to_start(fresh, block + "\n")

"""`gateway { ... }`: what the hub reads, and a one-line error naming the key for anything it cannot honour
(docs/supercluster.md). nats-server has no gateway flags, so neither does the hub."""

from __future__ import annotations

import pytest

from host.gateway import gw_hash
from host.opts import OptionsError, load_config


def load(tmp_path, text):
    p = tmp_path / "hub.conf"
    p.write_text(text)
    return load_config(str(p))


def test_gateway_block(tmp_path):
    o = load(tmp_path, """
gateway {
  name: A
  listen: 127.0.0.1:7222
  gateways: [
    {name: B, url: "nats://127.0.0.1:7223"}
    {name: C, urls: ["nats://gu:gp@127.0.0.1:7224", "nats://127.0.0.1:7225"]}
  ]
  authorization { user: gu, password: gp, timeout: 0.5 }
  reject_unknown_cluster: true
  advertise: "gw.example:7222"
  connect_retries: 3
}
""")
    go = o.gateway
    assert go.enabled and go.name == "A" and (go.host, go.port) == ("127.0.0.1", 7222)
    assert [(g.name, g.urls) for g in go.gateways] == [
        ("B", ["nats://127.0.0.1:7223"]), ("C", ["nats://gu:gp@127.0.0.1:7224", "nats://127.0.0.1:7225"])]
    assert (go.username, go.password, go.auth_timeout) == ("gu", "gp", 0.5)
    assert go.reject_unknown_cluster and go.advertise == "gw.example:7222" and go.connect_retries == 3


def test_port_zero_in_listen_means_a_free_port(tmp_path):
    assert load(tmp_path, "gateway { name: A, listen: 127.0.0.1:0 }\n").gateway.port == -1
    assert load(tmp_path, "gateway { name: A, port: -1 }\n").gateway.port == -1


def test_no_gateway_block_means_no_gateway(tmp_path):
    assert not load(tmp_path, "port: 4222\n").gateway.enabled


def test_gateway_name_equal_to_cluster_name(tmp_path):
    o = load(tmp_path, "cluster { name: A, listen: 127.0.0.1:6222 }\ngateway { name: A, port: 7222 }\n")
    assert o.cluster.name == o.gateway.name == "A"


def test_gateway_tls_block(tmp_path):
    o = load(tmp_path, "gateway { name: A, port: 7222, tls { cert_file: a.pem, key_file: b.pem, ca_file: c.pem,"
                       " timeout: 3 } }\n")
    assert (o.gateway.tls_cert, o.gateway.tls_key, o.gateway.tls_ca, o.gateway.tls_timeout) == \
        ("a.pem", "b.pem", "c.pem", 3.0)
    assert o.gateway.auth_timeout == 4.0  # nats-server getDefaultAuthTimeout: the TLS handshake comes first


@pytest.mark.parametrize("text, message", [
    ("gateway { port: 7222 }", "gateway has no name"),
    ("gateway { name: A }", 'gateway "A" has no port specified (select -1 for random port)'),
    ("gateway { name: 'a b', port: 7222 }", 'field "gateway.name": a gateway name cannot be empty or contain spaces'),
    ("gateway { name: A, listen: nowhere }", 'field "gateway.listen": expected host:port'),
    ("gateway { name: A, port: 70000 }", 'field "gateway.port": expected -1 (a free port) to 65535'),
    ("gateway { name: A, port: 7222, gateways: [{url: 'nats://127.0.0.1:7223'}] }",
     "gateway in the list 0 has no name"),
    ("gateway { name: A, port: 7222, gateways: [{name: B}] }", 'gateway "B" has no URL'),
    ("gateway { name: A, port: 7222, gateways: [{name: B, url: 'nats://127.0.0.1:x'}] }",
     'field "gateway.gateways.url": expected a URL like nats://host:7222'),
    ("gateway { name: A, port: 7222, gateways: [B] }", 'field "gateway.gateways": expected {name, url} maps'),
    ("gateway { name: A, port: 7222, gateways: [{name: B, url: 'nats://h:1', colour: red}] }",
     'unknown field "colour"'),
    ("gateway { name: A, port: 7222, colour: red }", 'unknown field "colour"'),
    ("gateway { name: A, port: 7222, authorization { token: t } }", 'unknown field "token"'),
    ("gateway { name: A, port: 7222, reject_unknown_cluster: maybe }", 'field "reject_unknown_cluster": expected true'),
    ("gateway { name: A, port: 7222, tls { key_file: b.pem } }", 'field "gateway.tls": missing "cert_file"'),
    ("cluster { name: A, listen: 127.0.0.1:6222 }\ngateway { name: B, port: 7222 }",
     "cluster name conflicts between cluster and gateway definitions"),
])
def test_gateway_errors_name_the_key(tmp_path, text, message):
    with pytest.raises(OptionsError) as e:
        load(tmp_path, text + "\n")
    assert message in str(e.value)
    assert "\n" not in str(e.value)


def test_gw_hash_is_nats_servers():
    # Captured from nats-server 2.15.1 (shared/nats-reference/more/README.md §B1): "B" and a server id.
    assert gw_hash("B") == b"b2oh2L"
    assert gw_hash("NBAULNJJ62F4KVR2CZ5XOPKWWPA3WUIYDYCLV2YI3RHDJPF4LQPNOK3F") == b"YKpwRm"

"""`cluster { ... }` and nats-server's cluster flags: what the hub reads, and a one-line error naming the key for
anything it cannot honour (docs/cluster.md)."""

from __future__ import annotations

import argparse
import ssl

import pytest

from host.opts import OptionsError, load_config
from host.route import first_host_name
from host.tls import TLSConfigError, route_contexts
from host.tools.hub_cmd import add_arguments, options_from_args


def load(tmp_path, text):
    p = tmp_path / "hub.conf"
    p.write_text(text)
    return load_config(str(p))


def flags(*argv):
    p = argparse.ArgumentParser()
    add_arguments(p)
    return options_from_args(p.parse_args(list(argv)))


def test_cluster_block(tmp_path):
    o = load(tmp_path, """
cluster {
  name: c1
  listen: 127.0.0.1:6222
  routes: [nats-route://127.0.0.1:6223, "nats-route://ru:rp@127.0.0.1:6224"]
  authorization { user: ru, password: rp, timeout: 0.5 }
  no_advertise: true
  connect_retries: 3
  compression: off
}
""")
    co = o.cluster
    assert co.enabled and co.name == "c1" and (co.host, co.port) == ("127.0.0.1", 6222)
    assert co.routes == ["nats-route://127.0.0.1:6223", "nats-route://ru:rp@127.0.0.1:6224"]
    assert (co.username, co.password, co.auth_timeout) == ("ru", "rp", 0.5)
    assert co.no_advertise and co.connect_retries == 3


def test_no_cluster_block_means_no_cluster(tmp_path):
    assert not load(tmp_path, "port: 4222\n").cluster.enabled


def test_pool_size_is_read_with_a_warning(tmp_path):
    o = load(tmp_path, "cluster { listen: 127.0.0.1:6222, pool_size: 3 }\n")
    assert any("pool_size 3 ignored" in w and "no-pool" in w for w in o.warnings), o.warnings


@pytest.mark.parametrize("text, message", [
    ("cluster { listen: nowhere }", 'field "cluster.listen": expected host:port'),
    ("cluster { listen: 127.0.0.1:70000 }", 'field "cluster.listen": expected host:port'),
    ("cluster { name: 'a b' }", "a cluster name cannot be empty or contain spaces"),
    ("cluster { routes: [127.0.0.1:6222] }", 'field "cluster.routes": expected a URL like nats-route://host:6222'),
    ("cluster { routes: [nats-route://127.0.0.1:x] }", 'field "cluster.routes"'),
    ("cluster { routes: 5 }", 'field "routes": expected an array'),
    ("cluster { colour: red }", 'unknown field "colour"'),
    ("cluster { authorization { user: a, token: t } }", 'unknown field "token"'),
    ("cluster { permissions { import: foo } }", 'field "cluster.permissions": route import/export permissions are '
                                                 "not supported"),
    ("cluster { tls { key_file: b.pem } }", 'field "cluster.tls": missing "cert_file"'),
    ("cluster { tls { cert_file: a.pem, ca_file: c.pem } }", 'field "cluster.tls": missing "key_file"'),
    ("cluster { tls { cert_file: a.pem, key_file: b.pem, verify: 'maybe' } }", 'field "verify": expected true'),
    ("cluster { tls { cert_file: a.pem, key_file: b.pem, timeout: soon } }", 'field "timeout"'),
    ("cluster { tls { cert_file: a.pem, key_file: b.pem, pinned_certs: [x] } }", 'unknown field "pinned_certs"'),
    ("cluster { port: 99999 }", 'field "cluster.port": out of range'),
])
def test_cluster_errors_name_the_key(tmp_path, text, message):
    with pytest.raises(OptionsError) as e:
        load(tmp_path, text + "\n")
    assert message in str(e.value)
    assert "\n" not in str(e.value)


def test_cluster_tls_block(tmp_path):
    o = load(tmp_path, """
cluster {
  listen: 127.0.0.1:6222
  tls { cert_file: "n.pem", key_file: "n-key.pem", ca_file: "ca.pem", verify: true }
}
""")
    co = o.cluster
    assert (co.tls_cert, co.tls_key, co.tls_ca, co.tls_verify) == ("n.pem", "n-key.pem", "ca.pem", True)
    # nats-server's defaults: a 2 s handshake, and routes get the TLS timeout + 1 s to authenticate
    assert (co.tls_timeout, co.auth_timeout, co.tls_insecure) == (2.0, 3.0, False)
    o = load(tmp_path, 'cluster { listen: 127.0.0.1:6222\n tls { cert_file: a, key_file: b, timeout: "5s", '
                       "insecure: true } }\n")
    assert (o.cluster.tls_timeout, o.cluster.auth_timeout, o.cluster.tls_insecure) == (5.0, 6.0, True)
    o = load(tmp_path, "cluster { listen: 127.0.0.1:6222, authorization { timeout: 1 }\n"
                       " tls { cert_file: a, key_file: b, timeout: 0.5 } }\n")
    assert (o.cluster.tls_timeout, o.cluster.auth_timeout) == (0.5, 1.0)


def test_cluster_tls_error_names_the_line(tmp_path):
    with pytest.raises(OptionsError) as e:
        load(tmp_path, "cluster {\n  listen: 127.0.0.1:6222\n  tls { key_file: b.pem }\n}\n")
    assert str(e.value).endswith('hub.conf:3: field "cluster.tls": missing "cert_file" (TLS on routes needs '
                                 "cert_file and key_file)")


def test_cluster_tls_files_that_do_not_load(tmp_path, certs):
    """Certificates are loaded when the hub starts: a file that does not load is one line naming its key."""
    co = load(tmp_path, "cluster { tls { cert_file: nope.pem, key_file: nope-key.pem } }\n").cluster
    with pytest.raises(TLSConfigError, match=r'^cluster.tls: cannot load cert_file "nope.pem" with key_file '
                                             r'"nope-key.pem": No such file or directory$'):
        route_contexts(co)
    co.tls_cert, co.tls_key, co.tls_ca = str(certs / "n.pem"), str(certs / "n-key.pem"), str(tmp_path / "ca.pem")
    with pytest.raises(TLSConfigError, match=r'^cluster.tls: cannot load ca_file ".*ca.pem": No such file'):
        route_contexts(co)
    co.tls_ca = str(certs / "ca.pem")
    accept, dial = route_contexts(co)
    # routes are always mutual TLS (nats-server's getTLSConfig), whatever `verify` says
    assert not co.tls_verify and accept.verify_mode == ssl.CERT_REQUIRED
    assert dial.verify_mode == ssl.CERT_REQUIRED and dial.check_hostname


def test_route_tls_name():
    """A dialled route whose URL names an IP address is checked for the first host name among the configured
    routes (nats-server routeTLSName), else for the address itself."""
    assert first_host_name(["nats-route://127.0.0.1:6222", "nats-route://u:p@n2.example:6222",
                            "nats-route://n3.example:6222"]) == "n2.example"
    assert first_host_name(["nats-route://127.0.0.1:6222", "nats-route://[::1]:6222"]) == ""


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    from tests.certs import cert

    d = tmp_path_factory.mktemp("certs")
    for name in ("ca", "n"):
        cert(d, name)  # self-signed, as `openssl req -x509 -subj /CN=NAME`
    return d


def test_cluster_flags():
    o = flags("--cluster", "nats://127.0.0.1:6222", "--cluster_name", "c9",
              "--routes", "nats://127.0.0.1:6223, nats-route://127.0.0.1:6224", "--no_advertise",
              "--connect_retries", "2")
    co = o.cluster
    assert co.enabled and (co.host, co.port, co.name) == ("127.0.0.1", 6222, "c9")
    assert co.routes == ["nats://127.0.0.1:6223", "nats-route://127.0.0.1:6224"]
    assert co.no_advertise and co.connect_retries == 2
    # nats.py's test suite spells the listen flag --cluster_listen, and puts route credentials in the URL
    o = flags("--cluster_listen", "nats://u:p@127.0.0.1:6225")
    assert (o.cluster.port, o.cluster.username, o.cluster.password) == (6225, "u", "p")


@pytest.mark.parametrize("argv, message", [
    (["--cluster", "6222"], "--cluster: expected a URL like nats://127.0.0.1:6222"),
    (["--cluster", "nats://127.0.0.1:6222", "--routes", "nats://a"], "--routes: expected URLs like"),
    (["--cluster", "nats://127.0.0.1:6222", "--cluster_name", "a b"], "--cluster_name: a cluster name cannot"),
])
def test_bad_cluster_flags(argv, message):
    with pytest.raises(OptionsError) as e:
        flags(*argv)
    assert message in str(e.value)

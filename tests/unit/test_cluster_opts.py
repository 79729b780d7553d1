"""`cluster { ... }` and nats-server's cluster flags: what the hub reads, and a one-line error naming the key for
anything it cannot honour (docs/cluster.md)."""

from __future__ import annotations

import argparse

import pytest

from host.opts import OptionsError, load_config
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
    ("cluster { tls { cert_file: a.pem, key_file: b.pem } }", "cluster.tls: TLS on routes is not supported"),
    ("cluster { port: 99999 }", 'field "cluster.port": out of range'),
])
def test_cluster_errors_name_the_key(tmp_path, text, message):
    with pytest.raises(OptionsError) as e:
        load(tmp_path, text + "\n")
    assert message in str(e.value)
    assert "\n" not in str(e.value)


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

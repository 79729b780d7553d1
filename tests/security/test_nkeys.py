"""nkey users, the same scenarios against nats-server and our hub: INFO carries a nonce when nkeys are configured (and
only then), a CONNECT with `nkey` + `sig` over that nonce authenticates the user and its permissions apply, and every
wrong signature is an 'Authorization Violation'. Config errors for nkeys carry nats-server's texts."""

from __future__ import annotations

import base64
import json
import sys

import pytest

from tests.compat.harness import Raw, Server, free_port, refuses_to_start, run
from tests.jwtmint import Key


def sig(key: Key, nonce: str) -> str:
    return base64.urlsafe_b64encode(key.sign(nonce.encode())).rstrip(b"=").decode()


def nkey_conf(user: Key, other: Key) -> str:
    """A global nkey user allowed to publish `ok.>` only, and an nkey user of account B."""
    return (f"authorization {{ users = [ {{ nkey: {user.public}, permissions: {{ publish: \"ok.>\" }} }} ] }}\n"
            f"accounts {{ B {{ users = [ {{ nkey: {other.public} }} ] }} }}\n")


@pytest.fixture(scope="module")
def keys():
    return Key("user"), Key("user"), Key("user")  # configured, configured in account B, unknown


@pytest.fixture
def nksrv(shared, keys):
    return shared(config=nkey_conf(keys[0], keys[1]))


def test_info_has_a_nonce_with_nkey_users_and_none_without(nksrv, shared):
    with Raw(nksrv.port) as r:
        assert r.info["auth_required"] is True
        assert isinstance(r.info.get("nonce"), str) and r.info["nonce"]
    with Raw(shared(config="authorization { user: a, password: b }\n").port) as r:
        assert "nonce" not in r.info


def test_nkey_user_signs_the_nonce_and_its_permissions_apply(nksrv, keys):
    with Raw(nksrv.port) as r:
        r.handshake(nkey=keys[0].public, sig=sig(keys[0], r.info["nonce"]))
        assert "nonce" not in r.connect_info  # the challenge is not repeated after CONNECT
        r.send(b"SUB ok.x 1\r\nPUB ok.x 2\r\nhi\r\nPUB no.x 2\r\nno\r\n")
        frames = r.frames_until_pong()
        assert [f[1].payload for f in frames if f[0] == "MSG"] == [b"hi"]
        assert ("-ERR", "'Permissions Violation for Publish to \"no.x\"'") in frames


def test_standard_base64_signature_is_accepted(nksrv, keys):
    with Raw(nksrv.port) as r:
        std = base64.b64encode(keys[0].sign(r.info["nonce"].encode())).decode()
        r.handshake(nkey=keys[0].public, sig=std)


def test_nkey_users_of_two_accounts_are_isolated(nksrv, keys):
    with Raw(nksrv.port) as a, Raw(nksrv.port) as b:
        a.handshake(nkey=keys[0].public, sig=sig(keys[0], a.info["nonce"]))
        b.handshake(nkey=keys[1].public, sig=sig(keys[1], b.info["nonce"]))
        b.send(b"SUB ok.x 1\r\n")
        b.sync()
        a.send(b"PUB ok.x 2\r\nhi\r\n")
        a.sync()
        assert b.msgs_until_pong() == []


@pytest.mark.parametrize("case", ["other key signed", "unknown nkey", "no sig", "not base64", "other nonce",
                                  "user and pass"])
def test_wrong_nkey_credentials_are_an_authorization_violation(nksrv, keys, case):
    user, _, stranger = keys
    with Raw(nksrv.port) as r:
        nonce = r.info["nonce"]
        connect = {
            "other key signed": {"nkey": user.public, "sig": sig(stranger, nonce)},
            "unknown nkey": {"nkey": stranger.public, "sig": sig(stranger, nonce)},
            "no sig": {"nkey": user.public},
            "not base64": {"nkey": user.public, "sig": "!!not base64!!"},
            "other nonce": {"nkey": user.public, "sig": sig(user, nonce + "x")},
            "user and pass": {"user": user.public, "pass": "x"},
        }[case]
        r.connect(**connect)
        r.send(b"PING\r\n")
        r.expect_err("Authorization Violation")
        r.expect_closed()


def test_nats_py_connects_with_nkeys_seed(nksrv, keys, tmp_path):
    seed = tmp_path / "user.nk"
    seed.write_text(keys[0].seed + "\n")

    async def body():
        nc = await nksrv.nc(nkeys_seed=str(seed))
        sub = await nc.subscribe("ok.py")
        await nc.publish("ok.py", b"signed")
        assert (await sub.next_msg(timeout=2)).data == b"signed"
        await nc.close()

    run(body())


@pytest.mark.parametrize("entry, text", [
    ("{ nkey: UNOTAKEY }", "Not a valid public nkey for a user"),
    ("{ nkey: %(acc)s }", "Not a valid public nkey for a user"),
    ("{ nkey: %(user)s, user: x }", "Nkey users do not take usernames or passwords"),
])
def test_bad_nkey_config_is_refused_with_nats_server_text(fresh, entry, text):
    entry = entry % {"acc": Key("account").public, "user": Key("user").public}
    out = refuses_to_start(fresh, f"authorization {{ users = [ {entry} ] }}\n")
    assert text in out


@pytest.mark.parametrize("conf", ["authorization { users = [ { nkey: %(user)s } ] }\n", "operator"])
def test_hub_without_nkeys_package_names_the_extra(monkeypatch, capsys, tmp_path, conf):
    from host.tools import cli
    from tests.jwtmint import Operator

    op = Operator()
    text = op.server_conf([]) if conf == "operator" else conf % {"user": Key("user").public}
    (tmp_path / "hub.conf").write_text(text)
    for name in ("nkeys", "nacl", "nacl.signing"):
        monkeypatch.setitem(sys.modules, name, None)  # `import nkeys` now fails as when it is not installed
    assert cli.main(["hub", "-c", str(tmp_path / "hub.conf"), "-t"]) == 1
    assert capsys.readouterr().err == "natsedge hub needs nkeys: pip install 'natsedge[hub]'\n"


def test_leaf_authenticates_with_the_leafnode_nkey(side, tmp_path, keys):
    leaf_port = free_port()
    s = Server(side, config=f"leafnodes {{ listen: 127.0.0.1:{leaf_port}\n  authorization {{ nkey: {keys[0].public} }}"
                            "\n}\n", workdir=tmp_path).start()
    try:
        for key, ok in ((keys[0], True), (keys[2], False), (None, False)):
            with Raw(leaf_port) as r:
                connect = {"name": "rawleaf", "headers": True, "protocol": 1}
                if key is not None:
                    connect.update(nkey=keys[0].public, sig=sig(key, r.info["nonce"]))
                r.send(b"CONNECT " + json.dumps(connect).encode() + b"\r\nPING\r\n")
                if ok:
                    assert json.loads(r.expect(rb"INFO (\{.*?\}) ?\r\n").group(1))["remote_account"] == "$G"
                else:
                    r.expect_err("Authorization Violation")
    finally:
        s.stop()


def test_leafnode_users_take_no_nkey(fresh, keys):
    # nats-server's leafnode users have a user and password only; an nkey there would otherwise match any leaf
    out = refuses_to_start(fresh, f"leafnodes {{ listen: 127.0.0.1:{free_port()}\n  authorization {{ users = [ "
                                  f"{{ nkey: {keys[0].public} }} ] }}\n}}\n")
    assert 'unknown field "nkey"' in out

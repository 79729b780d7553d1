"""INFO on accept, CONNECT options, PING/PONG and the connect_info INFO."""

from __future__ import annotations

import json
import re

from .harness import pub


def test_info_fields_on_accept(srv):
    r = srv.raw(read_info=False)
    m = r.expect(rb"INFO (\{[^\r\n]*\}) \r\n")  # note the space before CRLF
    info = json.loads(m.group(1))
    assert isinstance(info["server_id"], str) and info["server_id"]
    assert isinstance(info["version"], str) and re.match(r"\d+\.\d+\.\d+", info["version"])
    assert info["proto"] == 1
    assert info["headers"] is True
    assert info["max_payload"] == 1048576
    assert isinstance(info["client_id"], int) and not isinstance(info["client_id"], bool)
    assert info["client_id"] > 0
    assert info["host"] == "127.0.0.1"
    assert info["port"] == srv.port
    assert "auth_required" not in info
    assert "connect_info" not in info and "remote_account" not in info
    assert info.get("client_ip", "127.0.0.1") == "127.0.0.1"
    r.close()


def test_info_client_ids_distinct(srv):
    with srv.raw() as a, srv.raw() as b:
        assert a.info["client_id"] != b.info["client_id"]
        assert a.info["server_id"] == b.info["server_id"]


def test_ping_pong(srv):
    with srv.client() as c:
        c.send(b"PING\r\n")
        c.expect(rb"PONG\r\n")
        c.send(b"PING\r\nPING\r\nPING\r\n")
        c.expect(rb"PONG\r\nPONG\r\nPONG\r\n")


def test_second_info_after_first_pong(srv):
    with srv.raw() as c:
        c.connect(protocol=1)
        c.send(b"PING\r\n")
        c.expect(rb"PONG\r\n")
        m = c.expect(rb"INFO (\{[^\r\n]*\}) \r\n")
        info = json.loads(m.group(1))
        assert info["connect_info"] is True
        assert info["remote_account"] == "$G"
        assert info["client_id"] == c.info["client_id"]
        assert info["server_id"] == c.info["server_id"]
        # only once: later PINGs get a bare PONG
        c.send(b"PING\r\nPING\r\n")
        c.expect(rb"PONG\r\nPONG\r\n")
        c.sync()  # PONG must be the very next frame: no further INFO


def test_protocol_zero_gets_no_second_info(srv):
    with srv.raw() as c:
        c.connect(protocol=0)
        c.send(b"PING\r\nPING\r\n")
        c.expect(rb"PONG\r\nPONG\r\n")
        c.send(b"SUB x 1\r\n" + pub("x", b"1"))
        assert c.msgs_until_pong()[0].payload == b"1"


def test_connect_verbose_ok_after_each_op(srv):
    with srv.raw() as c:
        c.send(b'CONNECT {"verbose":true,"pedantic":true,"protocol":1,"headers":true}\r\n')
        c.expect(rb"\+OK\r\n")
        c.send(b"SUB a 1\r\n")
        c.expect(rb"\+OK\r\n")
        c.send(b"PUB a 1\r\nx\r\n")
        c.expect(rb"\+OK\r\nMSG a 1 1\r\nx\r\n")
        c.send(b"UNSUB 1\r\nPING\r\n")
        c.expect(rb"\+OK\r\nPONG\r\nINFO \{[^\r\n]*\} \r\n")


def test_connect_pedantic_wildcard_publish(srv):
    with srv.raw() as c:
        c.send(b'CONNECT {"verbose":false,"pedantic":true,"protocol":1}\r\n')
        c.send(b"SUB a.> 1\r\nPING\r\n")
        c.expect(rb"PONG\r\nINFO [^\r\n]*\r\n")
        c.send(b"PUB a.* 1\r\nx\r\nPING\r\n")
        # error is reported, but the message is still processed and the connection stays open
        c.expect(rb"-ERR 'Invalid Publish Subject'\r\nMSG a\.\* 1 1\r\nx\r\nPONG\r\n")
        c.send(b"PUB a.b 1\r\ny\r\nPING\r\n")
        c.expect(rb"MSG a\.b 1 1\r\ny\r\nPONG\r\n")


def test_connect_pedantic_verbose_wildcard_publish(srv):
    with srv.raw() as c:
        c.send(b'CONNECT {"verbose":true,"pedantic":true,"protocol":1}\r\n')
        c.expect(rb"\+OK\r\n")
        c.send(b"PUB a.* 1\r\nx\r\nPING\r\n")
        c.expect(rb"-ERR 'Invalid Publish Subject'\r\n\+OK\r\nPONG\r\n")
        c.send(b"SUB a..b 2\r\nPING\r\n")
        c.expect(rb"INFO [^\r\n]*\r\n-ERR 'Invalid Subject'\r\nPONG\r\n")


def test_connect_empty_object_defaults_verbose_pedantic(srv):
    # vector client/13
    with srv.raw() as c:
        c.send(b"CONNECT {}\r\n")
        c.expect(rb"\+OK\r\n")
        c.send(b"SUB x 1\r\nPUB x 1\r\na\r\nPUB x.* 1\r\nb\r\nPING\r\n")
        c.expect(rb"\+OK\r\n\+OK\r\nMSG x 1 1\r\na\r\n-ERR 'Invalid Publish Subject'\r\n\+OK\r\nPONG\r\n")


def test_no_connect_telnet_style(srv):
    # vector client/14: no CONNECT at all on a server without auth
    with srv.raw() as c:
        c.send(b"PING\r\nSUB y 1\r\nPUB y 2\r\nhi\r\nPING\r\n")
        c.expect(rb"PONG\r\n\+OK\r\n\+OK\r\nMSG y 1 2\r\nhi\r\nPONG\r\n")


def test_echo_false_suppresses_own_messages(srv):
    with srv.client(echo=False) as a, srv.client() as b:
        a.send(b"SUB e 1\r\n" + pub("e", b"own"))
        a.sync()
        b.send(pub("e", b"other"))
        b.sync()
        msgs = a.msgs_until_pong()
        assert [(m.subject, m.payload) for m in msgs] == [("e", b"other")]


def test_echo_default_true(srv):
    with srv.raw() as c:
        c.send(b'CONNECT {"verbose":false,"protocol":1}\r\nSUB e 1\r\n' + pub("e", b"me") + b"PING\r\n")
        c.expect(rb"MSG e 1 2\r\nme\r\nPONG\r\n")


def test_no_responders_requires_headers(srv):
    # vector client/04
    with srv.raw() as c:
        c.send(b'CONNECT {"verbose":false,"protocol":1,"headers":false,"no_responders":true}\r\n')
        c.expect(rb"-ERR 'no responders requires headers support'\r\n")
        assert c.expect_closed() == b""


def test_invalid_client_protocol(srv):
    # vector client/08
    with srv.raw() as c:
        c.send(b'CONNECT {"verbose":false,"protocol":2}\r\n')
        c.expect(rb"-ERR 'invalid client protocol'\r\n")
        assert c.expect_closed() == b""


def test_malformed_connect_json_closes_silently(srv):
    # vector client/10
    with srv.client() as c:
        c.send(b"CONNECT {bad json}\r\n")
        assert c.expect_closed() == b""


def test_malformed_first_connect_json_closes_silently(srv):
    with srv.raw() as c:
        c.send(b'CONNECT {"verbose":\r\n')
        assert c.expect_closed() == b""


def test_second_connect_is_accepted(srv):
    with srv.client() as c:
        c.send(b'connect {"verbose":true,"protocol":1}\r\n')
        c.expect(rb"\+OK\r\n")
        c.send(b"SUB z 1\r\n")
        c.expect(rb"\+OK\r\n")


def test_connect_name_and_lang_are_informational(srv):
    with srv.raw() as c:
        c.send(b'CONNECT {"verbose":false,"protocol":1,"name":"weird name \\u00e9","lang":"x","version":"9",'
               b'"unknown_field":[1,2,{"a":null}]}\r\nPING\r\n')
        c.expect(rb"PONG\r\n")

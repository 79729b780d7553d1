"""The tracing keys of an account (`msg_trace`/`trace_dest`, `allow_trace` on exports and imports), read by our hub
as nats-server reads them: the values taken, and a bad one refused with nats-server's error text (checked against
`nats-server -t`)."""

from __future__ import annotations

import subprocess

import pytest

from host.opts import OptionsError, load_config
from tests.compat.harness import nats_server_binary


def _conf(tmp_path, body: str) -> str:
    path = tmp_path / "server.conf"
    path.write_text(body)
    return str(path)


@pytest.mark.parametrize("body,dest,sampling", [
    ('msg_trace: "trace.a"', "trace.a", 100),
    ('trace_dest: "trace.a"', "trace.a", 100),
    ('msg_trace: { dest: "trace.a", sampling: 25 }', "trace.a", 25),
    ('msg_trace: { dest: "trace.a", sampling: "40%" }', "trace.a", 40),
])
def test_msg_trace_is_read(tmp_path, body, dest, sampling):
    opts = load_config(_conf(tmp_path, f"accounts {{ A {{ {body} }} }}\n"))
    acc = opts.accounts["A"]
    assert (acc.trace_dest, acc.trace_sampling) == (dest, sampling)


def test_sampling_without_destination_is_a_warning(tmp_path):
    opts = load_config(_conf(tmp_path, "accounts { A { msg_trace: { sampling: 50 } } }\n"))
    assert opts.accounts["A"].trace_sampling == 0
    assert any("Trace destination sampling ignored since no destination was set" in w for w in opts.warnings)


@pytest.mark.parametrize("body,error", [
    ('accounts { A { msg_trace: "trace.*" } }', 'Trace destination "trace.*" is not valid'),
    ('accounts { A { msg_trace: { dest: "t", sampling: 0 } } }',
     "Ttrace destination sampling value 0 is invalid, needs to be [1..100]"),
    ('accounts { A { msg_trace: { dest: "t", sampling: "x%" } } }', 'Invalid trace destination sampling value "x%"'),
    ('accounts { A { msg_trace: { dest: "t", bogus: 1 } } }',
     'Unknown field "bogus" parsing account message trace map/struct "msg_trace"'),
    ('accounts { A { exports: [ { stream: "s.>", allow_trace: true } ] } }',
     "Detected allow_trace directive on non-service"),
    ('accounts { A { exports: [ { service: "s.>" } ] }, B { imports: [ { service: { account: A, subject: "s.>" }, '
     "allow_trace: true } ] } }", "Detected allow_trace directive on a non-stream"),
])
def test_bad_values_are_refused_as_nats_server_refuses_them(tmp_path, body, error):
    path = _conf(tmp_path, body + "\n")
    with pytest.raises(OptionsError) as e:
        load_config(path)
    assert error in str(e.value)
    p = subprocess.run([nats_server_binary(), "-t", "-c", path], capture_output=True, text=True, timeout=10)
    assert p.returncode != 0 and error in p.stdout + p.stderr

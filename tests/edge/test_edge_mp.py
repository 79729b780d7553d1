"""The edge under the real MicroPython unix port: the API suite, start-up errors, the user's app.

tests/edge/test_edge_api.py and test_edge_trace_api.py run here through tests/mp/run_unit.py; every one of their
test functions must pass and none may silently disappear. The same config errors must come out of `micropython -m edge`,
`python -m edge` and `natsedge edge` (host/tools/edge_cmd.py): one line naming the key, exit code 2.
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys

import nats
import pytest

from tests.compat.harness import run
from tests.edge.edgeharness import REPO, edge_config, free_port, micropython


def _test_functions(path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return sorted(n.name for n in tree.body if isinstance(n, ast.FunctionDef) and n.name.startswith("test_"))


@pytest.mark.parametrize("module", ["test_edge_api", "test_edge_trace_api"])
def test_api_suite_passes_on_micropython(module):
    expected = _test_functions(REPO / "tests" / "edge" / f"{module}.py")
    env = dict(os.environ, MICROPYPATH=f"{REPO}:.frozen")
    proc = subprocess.run([micropython(), "-X", "heapsize=2M", "tests/mp/run_unit.py", f"tests.edge.{module}"],
                          cwd=str(REPO), env=env, capture_output=True, text=True, timeout=100)
    out = proc.stdout
    passed = re.findall(r"^PASS (\w+)", out, re.M)
    failed = re.findall(r"^FAIL (\w+): (.*)$", out, re.M)
    print(out[-300:])
    assert not failed, f"failed on MicroPython: {failed}\n{proc.stderr[-3000:]}"
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(passed) == expected


BAD_CONFIGS = [
    ({"name": "e", "listen": 42}, 'config: "listen": expected "host:port" or null, got 42'),
    ({"name": "e", "hub": {"url": "http://h:1"}}, 'config: "hub.url": expected "nats-leaf://host:port", got "http://h:1"'),
    ({"name": "e", "hub": {"url": ["nats-leaf://h:1", "http://h:2"]}},
     'config: "hub.url[1]": expected "nats-leaf://host:port", got "http://h:2"'),
    ({"name": "e", "hub": {"url": []}},
     'config: "hub.url": expected "nats-leaf://host:port" or a non-empty list of them, got []'),
    ({"name": "e", "limits": {"max_connections": "4"}},
     'config: "limits.max_connections": expected an integer >= 0, got "4"'),
    ({"name": "e", "app": "no_such_module_xyz"}, 'config: "app": cannot import "no_such_module_xyz"'),
]


def _runners(cfg_path):
    return {
        "micropython -m edge": [micropython(), "-m", "edge", str(cfg_path)],
        "python -m edge": [sys.executable, "-m", "edge", str(cfg_path)],
        "natsedge edge": [sys.executable, "-m", "host.tools.edge_cmd", str(cfg_path)],
    }


@pytest.mark.parametrize("doc,message", BAD_CONFIGS,
                         ids=["listen", "hub.url", "hub.url-list", "hub.url-empty", "limits", "app"])
def test_bad_config_exits_2_with_one_line_naming_the_key(tmp_path, doc, message):
    cfg = tmp_path / "bad.json"
    cfg.write_text(json.dumps(doc))
    env = dict(os.environ, MICROPYPATH=str(REPO), PYTHONPATH=str(REPO))
    for how, cmd in _runners(cfg).items():
        p = subprocess.run(cmd, cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=20)
        assert p.returncode == 2, (how, p.stdout, p.stderr)
        assert message in p.stderr, (how, p.stderr)
        assert "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1, (how, p.stderr)


def test_unreadable_and_invalid_json_configs(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    env = dict(os.environ, MICROPYPATH=str(REPO), PYTHONPATH=str(REPO))
    for path, text in ((bad, "is not valid JSON"), (tmp_path / "missing.json", "cannot read")):
        for how, cmd in _runners(path).items():
            p = subprocess.run(cmd, cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=20)
            assert p.returncode == 2 and text in p.stderr and "Traceback" not in p.stderr, (how, p.stderr)


APP = '''
# A user's device code: answers requests on app.echo and reports how many it served.
import asyncio

served = 0


async def main(leaf):
    async def echo(msg):
        global served
        served += 1
        msg.respond(b"echo:" + msg.data)
        leaf.publish("app.served", b"%d" % served)

    leaf.subscribe("app.echo", echo, queue="echoers")
    r = await leaf.request("app.echo", b"self-test", timeout=1)
    leaf.publish("app.ready", r.data)
    while True:
        await asyncio.sleep(3600)
'''


def test_app_runs_with_the_leaf_and_serves_lan_clients(edges, tmp_path):
    appdir = tmp_path / "app"
    appdir.mkdir()
    (appdir / "deviceapp.py").write_text(APP)
    cfg = edge_config("withapp", listen=free_port())
    cfg["app"] = "deviceapp"

    async def body(e):
        nc = await nats.connect(e.url, allow_reconnect=False)
        served = await nc.subscribe("app.served")
        await nc.flush()
        for i in range(3):
            assert (await nc.request("app.echo", b"%d" % i, timeout=2)).data == b"echo:%d" % i
        assert (await served.next_msg(timeout=2)).data == b"2"
        await nc.close()

    e = edges(cfg, extra_path=str(appdir))
    run(body(e))
    assert e.alive()


def test_cpython_runs_the_same_config_with_natsedge_edge(tmp_path):
    port = free_port()
    cfg = tmp_path / "edge.json"
    cfg.write_text(json.dumps(edge_config("cpy", listen=port)))
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-m", "host.tools.edge_cmd", str(cfg)], cwd=str(tmp_path), env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert proc.stdout.readline().startswith("edge: ready name=cpy")

        async def body():
            nc = await nats.connect(f"nats://127.0.0.1:{port}", allow_reconnect=False)
            sub = await nc.subscribe("x")
            await nc.publish("x", b"1")
            assert (await sub.next_msg(timeout=2)).data == b"1"
            await nc.close()

        run(body())
        proc.terminate()
        assert proc.wait(timeout=5) == 0  # SIGTERM is a clean stop on CPython
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_untraced_message_header_check_allocates_nothing():
    # broker.route()'s one test for tracing on a message with headers, under micropython.heap_lock(): an allocation
    # would raise MemoryError. A traced message is the only one that loads edge/leaf/msgtrace.py.
    script = (
        "import micropython, sys\n"
        "from edge.leaf.broker import TRACE_DEST_KEY, Leaf\n"
        "hdr = b'NATS/1.0\\r\\nUnit: C\\r\\nNats-Trace-Only: true\\r\\n\\r\\n'\n"
        "n = hits = 0\n"
        "micropython.heap_lock()\n"
        "while n < 100:\n"  # not range(): that allocates
        "    if TRACE_DEST_KEY in hdr:\n"
        "        hits += 1\n"
        "    n += 1\n"
        "micropython.heap_unlock()\n"
        "Leaf('e').publish('a.b', b'x', headers={'Unit': 'C'})\n"
        "print(hits, 'edge.leaf.msgtrace' in sys.modules)\n"
    )
    env = dict(os.environ, MICROPYPATH=f"{REPO}:.frozen")
    p = subprocess.run([micropython(), "-c", script], cwd=str(REPO), env=env, capture_output=True, text=True,
                       timeout=20)
    assert (p.returncode, p.stdout.split()) == (0, ["0", "False"]), p.stderr

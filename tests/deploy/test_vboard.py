"""`natsedge deploy` and `natsedge console` against a virtual board (the MicroPython unix port behind a PTY), and the
deployed main.py sending its status through the edge leaf to a real nats-server hub.

What cannot run here (real Wi-Fi, a real watchdog, flash writes) is listed in docs/firmware.md.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import select
import subprocess
import sys
import time

import nats

from host.tools.firmware_cmd import sha256_file

from .vboard import REPO, Hub, VirtualBoard, run_cli, stop_pid, wait_until

BOARD = REPO / "boards" / "esp32"


def _site(path, hub_url, name="vb-1", status=0.5):
    doc = {"name": name, "hub": {"url": hub_url}, "listen": None, "limits": {"reconnect_min": 0.2, "reconnect_max": 1},
           "board": {"status": status, "watchdog": 10, "restart_delay": 1}}
    path.write_text(json.dumps(doc))
    return path


def test_deploy_to_a_virtual_board_then_its_status_reaches_the_hub(tmp_path):
    bundle = tmp_path / "bundle"
    r = run_cli("host.tools.cli", "firmware", "bundle", "--out", str(bundle))
    assert r.returncode == 0, r.stderr
    manifest = json.loads((bundle / "manifest.json").read_text())
    hub = Hub(tmp_path).start()
    board = VirtualBoard(tmp_path / "flash").start()
    try:
        site = _site(tmp_path / "site.json", hub.leaf_url)

        # 1. deploy, building the bundle itself: everything lands, and hashes match the separate build
        t0 = time.monotonic()
        r = run_cli("host.tools.cli", "deploy", "--port", board.port, "--config", str(site))
        first = time.monotonic() - t0
        assert r.returncode == 0, r.stdout + r.stderr
        n = len(manifest["files"]) + 3
        assert f"[ 1/{n}] lib/edge/" in r.stdout and f"[{n}/{n}] main.py" in r.stdout
        assert f"verified {n} files by sha256 on the board ({n} copied, 0 unchanged" in r.stdout
        flash = board.flash
        for f in manifest["files"]:
            assert sha256_file(flash / "lib" / f["path"]) == f["sha256"], f["path"]
        assert (flash / "config.json").read_bytes() == site.read_bytes()
        for name in ("boot.py", "main.py"):
            assert (flash / name).read_bytes() == (BOARD / name).read_bytes()

        # 2. a stale module and a stray .py (which would shadow its .mpy) are removed; a damaged file is re-copied
        (flash / "lib/edge/gone.mpy").write_bytes(b"M\x06\x00\x1f")
        (flash / "lib/edge/proto.py").write_text("raise ImportError('shadow')\n")
        (flash / "lib/edge/subjects.mpy").write_bytes(b"M\x06\x00\x1fbroken")
        (flash / "last_error.txt").write_text("ValueError: from the previous run\n")

        async def scenario():
            nc = await nats.connect(hub.url)
            try:
                sub = await nc.subscribe("$EDGE.vb-1.status")
                await nc.flush()
                t1 = time.monotonic()
                r2 = await asyncio.to_thread(run_cli, "host.tools.cli", "deploy", "--port", board.port,
                                             "--config", str(site), "--bundle", str(bundle), "--reset", "--run")
                second = time.monotonic() - t1
                msgs = [await sub.next_msg(timeout=20)]
                msgs.append(await sub.next_msg(timeout=5))
                return r2, second, msgs
            finally:
                await nc.close()

        r2, second, msgs = asyncio.run(scenario())
        assert r2.returncode == 0, r2.stdout + r2.stderr
        assert "removed stale lib/edge/gone.mpy" in r2.stdout and "removed stale lib/edge/proto.py" in r2.stdout
        assert f"(1 copied, {n - 1} unchanged" in r2.stdout
        assert "--reset: the unix port has no machine.reset()" in r2.stdout
        assert "main.py started on the board" in r2.stdout
        assert not (flash / "lib/edge/gone.mpy").exists() and not (flash / "lib/edge/proto.py").exists()

        # 3. the deployed main.py publishes its status through the leaf to the hub
        s = json.loads(msgs[-1].data)
        assert s["name"] == "vb-1" and s["platform"] == "linux" and s["hub_up"] is True
        assert s["connects"] == 1 and s["reconnects"] == 0
        assert s["mem_free"] > 0 and s["mem_alloc"] > 0 and s["uptime_s"] >= 0
        assert s["seq"] > json.loads(msgs[0].data)["seq"]
        assert s["reset_cause"] is None and s["rssi"] is None  # no machine.reset_cause, no network on unix
        assert s["last_error"].startswith("ValueError: from the previous run")

        # 4. the console shows the board's log without stopping it
        r3 = run_cli("host.tools.cli", "console", "--port", board.port, "--log", "--until", "board: status seq=",
                     "--seconds", "10")
        assert r3.returncode == 0, r3.stdout + r3.stderr
        assert "edge: uplink up hub=127.0.0.1" in r3.stdout

        # 5. the hub restarts: the board stays up, the leaf dials again, and the status counts one reconnect
        hub.stop()
        hub.start()

        async def after_restart():
            nc = await nats.connect(hub.url)
            try:
                sub = await nc.subscribe("$EDGE.vb-1.status")
                return json.loads((await sub.next_msg(timeout=20)).data)
            finally:
                await nc.close()

        s2 = asyncio.run(after_restart())
        assert s2["hub_up"] is True and s2["connects"] == 2 and s2["reconnects"] == 1, s2
        assert s2["uptime_s"] >= s["uptime_s"] and s2["seq"] > s["seq"]
        print(f"\nbundle {manifest['total']:,} B in {len(manifest['files'])} files; first deploy {first:.1f} s, "
              f"second (unchanged) {second:.1f} s; status {s2}")
    except BaseException:
        # what the board printed, and the hub's log, make a failure here readable
        r = run_cli("host.tools.cli", "console", "--port", board.port, "--log", "--seconds", "1")
        print(f"--- board output:\n{r.stdout}\n--- hub log:\n{(tmp_path / 'hub.log').read_text()[-3000:]}")
        raise
    finally:
        board.stop()
        hub.stop()


def test_deploy_to_a_port_that_does_not_exist_names_the_port(tmp_path):
    site = _site(tmp_path / "site.json", "nats-leaf://127.0.0.1:7422")
    port = str(tmp_path / "no-such-board")
    r = run_cli("host.tools.cli", "deploy", "--port", port, "--config", str(site), "--no-bundle")
    assert r.returncode == 1
    assert f"natsedge deploy: error: no board answered on {port} (probe)" in r.stderr


def test_deploy_refuses_a_bad_config_before_touching_the_board(tmp_path):
    site = tmp_path / "site.json"
    site.write_text(json.dumps({"name": "x", "board": {"watchdg": 5}}))
    r = run_cli("host.tools.cli", "deploy", "--port", str(tmp_path / "never-opened"), "--config", str(site))
    assert r.returncode == 1
    assert 'unknown key "board.watchdg"' in r.stderr
    assert "probing" not in r.stdout


def test_deploy_refuses_a_bundle_without_the_board_module(tmp_path):
    bundle = tmp_path / "bundle"
    assert run_cli("host.tools.cli", "firmware", "bundle", "--out", str(bundle), "--board", "none").returncode == 0
    site = _site(tmp_path / "site.json", "nats-leaf://127.0.0.1:7422")
    r = run_cli("host.tools.cli", "deploy", "--port", str(tmp_path / "x"), "--config", str(site), "--bundle",
                str(bundle))
    assert r.returncode == 1
    assert "lacks edgeboard.mpy, which main.py imports" in r.stderr


def test_deploy_refuses_a_kv_config_with_a_bundle_built_without_kvcache(tmp_path):
    bundle = tmp_path / "bundle"
    assert run_cli("host.tools.cli", "firmware", "bundle", "--out", str(bundle)).returncode == 0
    site = _site(tmp_path / "site.json", "nats-leaf://127.0.0.1:7422")
    doc = json.loads(site.read_text())
    doc["kv"] = {"buckets": ["config"]}
    site.write_text(json.dumps(doc))
    r = run_cli("host.tools.cli", "deploy", "--port", str(tmp_path / "x"), "--config", str(site), "--bundle",
                str(bundle))
    assert r.returncode == 1
    assert "uses kvcache but bundle" in r.stderr and "natsedge firmware bundle --with kvcache" in r.stderr


def test_deployed_files_hash_on_the_board_like_on_the_host(tmp_path):
    # The verify step trusts hashlib on the board: check it against CPython on a file bigger than its 512 B reads.
    board = VirtualBoard(tmp_path / "flash").start()
    try:
        data = bytes(range(256)) * 9 + b"tail"
        (board.flash / "blob.bin").write_bytes(data)
        from host.tools.deploy_cmd import _VERIFY, Board

        out = Board(board.port).run("verify", "exec", _VERIFY % {"paths": ["blob.bin", "missing.bin"], "keep": [],
                                                                  "root": "lib/edge"})
        assert f"NATSEDGE H blob.bin {hashlib.sha256(data).hexdigest()}" in out
        assert "NATSEDGE H missing.bin -" in out
    finally:
        board.stop()


def test_console_repl_passes_keys_and_output_through(tmp_path):
    # `natsedge console` on a terminal (a pty here): type at the board's REPL, see its answer, leave with Ctrl-].
    board = VirtualBoard(tmp_path / "flash").start()
    master, slave = os.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "host.tools.cli", "console", "--port", board.port], cwd=REPO,
                            stdin=slave, stdout=slave, stderr=slave)
    os.close(slave)
    seen = b""
    try:
        def read_until(text: bytes) -> bool:
            nonlocal seen
            while select.select([master], [], [], 0.1)[0]:
                seen += os.read(master, 4096)
            return text in seen

        wait_until(lambda: read_until(b"Ctrl-] or Ctrl-x to exit"), 10, msg="mpremote's REPL banner")
        os.write(master, b"print(6 * 7)\r")
        wait_until(lambda: read_until(b"\n42"), 10, msg="the board's answer")
        os.write(master, b"\x1d")
        assert proc.wait(timeout=10) == 0
    finally:
        stop_pid(proc)
        os.close(master)
        board.stop()


def test_console_repl_without_a_terminal_says_to_use_log(tmp_path):
    r = run_cli("host.tools.cli", "console", "--port", str(tmp_path / "board"))
    assert r.returncode == 1
    assert "the REPL needs a terminal on stdin; from a script use --log" in r.stderr

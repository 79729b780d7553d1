"""boards/esp32 boot.py and edgeboard.py under the real MicroPython unix port, with stand-ins for what only an ESP32
has: a fake `network` (a WLAN that joins on the N-th connect, or never, or reports a wrong password) and a fake
`machine` (WDT, reset, reset_cause) put into sys.modules before the board code imports it.

The stand-ins check the board code's logic (bounded tries, backoff, watchdog feeding, reset after a fatal error);
they say nothing about the real drivers (docs/firmware.md, "What cannot be tested here")."""

from __future__ import annotations

import json
import os
import subprocess

from .vboard import REPO, tool

BOARD = REPO / "boards" / "esp32"

FAKE_NETWORK = """\
import json, time
STA_IF = 0
STAT_IDLE = 1000
STAT_CONNECTING = 1001
STAT_WRONG_PASSWORD = 202
STAT_NO_AP_FOUND = 201
with open('fake_network.json') as _f:
    _plan = json.load(_f)
calls = []
disconnects = []
_up = [False]
class WLAN:
    def __init__(self, i):
        pass
    def active(self, v=None):
        return True
    def connect(self, ssid, password):
        calls.append(time.ticks_ms())
        if _plan['join_on'] and len(calls) >= _plan['join_on']:
            _up[0] = True
    def isconnected(self):
        return _up[0]
    def status(self, *a):
        return _plan['status']
    def disconnect(self):
        disconnects.append(1)
    def ifconfig(self):
        return ('10.0.0.7', '255.255.255.0', '10.0.0.1', '10.0.0.1')
names = []
def hostname(h):
    names.append(h)
"""

FAKE_MACHINE = """\
import sys
fed = []
made = []
resets = []
class WDT:
    def __init__(self, id=0, timeout=5000):
        made.append(timeout)
    def feed(self):
        fed.append(1)
def reset_cause():
    return 3
def reset():
    resets.append(1)
    sys.stdout.write('fake: reset after %d feeds, WDT %r\\n' % (len(fed), made))
    raise SystemExit(0)
"""


def _run(cwd, code, timeout=30, path_extra=()):
    mp_path = ":".join(["", ".frozen", "lib", str(REPO), str(BOARD), *path_extra])
    return subprocess.run([tool("micropython"), "-X", "heapsize=400000", "-c", code], cwd=cwd,
                          env=dict(os.environ, MICROPYPATH=mp_path), capture_output=True, text=True, timeout=timeout)


def _wifi_board(tmp_path, join_on, status=201, tries=3):
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "network.py").write_text(FAKE_NETWORK)
    (tmp_path / "fake_network.json").write_text(json.dumps({"join_on": join_on, "status": status}))
    (tmp_path / "config.json").write_text(json.dumps({
        "name": "b", "wifi": {"ssid": "plant-floor", "password": "pw", "hostname": "b-1", "tries": tries,
                              "timeout": 0.2, "backoff": 0.1, "backoff_max": 0.15}}))


def test_boot_joins_wifi_after_retries_with_backoff(tmp_path):
    _wifi_board(tmp_path, join_on=3)
    r = _run(tmp_path, "import boot, network; c = network.calls; "
                       "print('gaps', [c[i + 1] - c[i] for i in range(len(c) - 1)], network.names)")
    assert r.returncode == 0, r.stderr
    assert "boot: attempt 1/3 to join 'plant-floor' failed (status 201)" in r.stdout
    assert "boot: attempt 2/3" in r.stdout
    assert "boot: joined 'plant-floor', address 10.0.0.7" in r.stdout
    gaps, names = r.stdout.split("gaps ")[1].split("] ")
    gaps = json.loads(gaps + "]")
    assert names.strip() == "['b-1']"
    # each gap = the 0.2 s join timeout + the pause: 0.1 s, then 0.2 s capped at backoff_max 0.15 s
    assert 290 <= gaps[0] < 450 and 340 <= gaps[1] < 500, gaps


def test_boot_gives_up_after_the_last_try_and_lets_main_run(tmp_path):
    _wifi_board(tmp_path, join_on=0, tries=2)
    r = _run(tmp_path, "import boot, network; print('disconnects', len(network.disconnects)); print('after boot')")
    assert r.returncode == 0, r.stderr
    assert "disconnects 1" in r.stdout  # between the attempts only: after the last, the driver keeps retrying
    assert "boot: attempt 2/2" in r.stdout
    assert "boot: no Wi-Fi after 2 attempts: the edge starts offline, the driver keeps trying" in r.stdout
    assert r.stdout.rstrip().endswith("after boot")


def test_boot_stops_when_the_password_is_rejected_twice(tmp_path):
    _wifi_board(tmp_path, join_on=0, status=202, tries=5)
    r = _run(tmp_path, "import boot")
    assert "boot: attempt 2/5" in r.stdout  # once may be a plain connection failure: the ESP32 reports both as 202
    assert "boot: Wi-Fi password rejected twice: not retrying" in r.stdout
    assert "attempt 3/5" not in r.stdout


def test_boot_without_network_module_skips_wifi(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"name": "b", "wifi": {"ssid": "x"}}))
    r = _run(tmp_path, "import boot")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "boot: no network module on linux: Wi-Fi skipped"


def test_main_with_a_bad_config_stays_at_the_repl_without_reset(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"name": "b", "limits": {"max_payload": "big"}}))
    r = _run(tmp_path, "import main; print('back at the REPL')")
    assert r.returncode == 0, r.stderr
    assert 'board: config: "limits.max_payload": expected an integer >= 1, got "big"' in r.stdout
    assert "board: not starting the edge; fix config.json and reset the board" in r.stdout
    assert "back at the REPL" in r.stdout


def test_fatal_task_error_is_logged_then_the_board_resets_with_the_watchdog_fed(tmp_path):
    (tmp_path / "boom.py").write_text(
        "import asyncio\n"
        "async def _die():\n"
        "    await asyncio.sleep_ms(600)\n"
        "    raise ValueError('boom')\n"
        "async def main(leaf):\n"
        "    asyncio.create_task(_die())\n")
    (tmp_path / "fakemachine.py").write_text(FAKE_MACHINE)
    (tmp_path / "config.json").write_text(json.dumps({
        "name": "b", "hub": None, "listen": None, "app": "boom",
        "board": {"watchdog": 0.4, "restart_delay": 0.3, "status": 0.2}}))
    r = _run(tmp_path, "import sys, fakemachine; sys.modules['machine'] = fakemachine; import main")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "board: watchdog: 400 ms" in r.stdout
    assert "board: status seq=1 hub_up=0" in r.stdout
    assert "board: fatal: ValueError('boom',); restarting in 0 s" in r.stdout
    line = next(ln for ln in r.stdout.splitlines() if ln.startswith("fake: reset"))
    feeds = int(line.split()[3])
    assert feeds >= 6 and line.endswith("WDT [400]"), line  # fed every 100 ms for 0.6 s, and during the delay
    assert "ValueError: boom" in (tmp_path / "last_error.txt").read_text()


def test_main_without_machine_reset_exits_after_a_fatal_error(tmp_path):
    # The unix port has no machine.reset: the fatal path ends the program instead (exit code 1).
    (tmp_path / "boom.py").write_text(
        "import asyncio\n"
        "async def _die():\n"
        "    raise MemoryError('fake')\n"
        "async def main(leaf):\n"
        "    asyncio.create_task(_die())\n")
    (tmp_path / "config.json").write_text(json.dumps({
        "name": "b", "hub": None, "app": "boom", "board": {"restart_delay": 0, "status": 0}}))
    r = _run(tmp_path, "import main")
    assert r.returncode == 1
    assert "board: watchdog: not on linux" in r.stdout
    assert "board: fatal: MemoryError('fake',)" in r.stdout
    assert "board: no machine.reset on linux: exiting" in r.stdout

"""`natsedge deploy` and `natsedge console`: talk to a MicroPython board through mpremote.

``natsedge deploy --port PORT --config site.json`` puts an edge on a board in four steps, each one mpremote session
(``mpremote connect PORT resume ...`` run as a subprocess):

1. probe: platform, ``.mpy`` version, free heap, whether the firmware already freezes ``edge``; make ``lib/edge/...``;
2. copy: the ``.mpy`` bundle to ``lib/edge/`` (built first when ``--bundle`` is not given), the config to
   ``config.json``, then ``boot.py`` and ``main.py`` last, so an interrupted deploy never leaves a new ``main.py``
   starting an old edge; mpremote skips files whose sha256 already matches (``--force`` copies everything);
3. verify: one script hashes every file on the device (hashlib.sha256) and compares it with the manifest; stale
   files in ``lib/edge`` (modules no longer in the bundle, stray ``.py`` that would shadow an ``.mpy``) are removed;
4. optionally ``--reset`` (``machine.reset()`` on ESP32; the unix port has none, so it is skipped with a note) or
   ``--run`` (start ``main.py`` in the background session with ``exec --no-follow``).

``resume`` is the default: the board keeps running what it runs between sessions (mpremote's Ctrl-C still stops a
program, so the session can start). ``--no-resume`` asks for mpremote's soft reset first: fine on an ESP32 and on
``natsedge vboard`` (host/tools/vboard.py restarts its unix port, as a board reboots), but a bare unix port behind
a PTY exits on it.

``natsedge console --port PORT`` is ``mpremote connect PORT resume repl``; ``--log`` instead only reads the port and
copies it to stdout (no Ctrl-C is sent, so a running edge keeps running), optionally ``--until TEXT`` / ``--seconds``.

One module serves both commands because both are sessions with a board's REPL; `add_arguments` and `run` pick the
command from the parser name.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import termios
import time
import tty
from pathlib import Path

from host.tools.firmware_cmd import (
    BOARDS_DIR,
    DEFAULT_BUDGET_KB,
    DEFAULT_TARGET_MPY,
    OPTIONAL_PACKAGES,
    FirmwareError,
    board_modules,
    build_bundle,
    format_report,
    load_manifest,
    parse_target,
    sha256_file,
)

BOARD = "esp32"
BOARD_DIR = BOARDS_DIR / BOARD
DEVICE_LIB = "lib"
DEVICE_CONFIG = "config.json"
# mpremote speaks the raw REPL at about 20 KB/s over a PTY and less over a 115200-baud UART: copy timeouts scale.
COPY_BYTES_PER_S = 4000
# what mpremote prints when nothing usable answers on the port
NO_BOARD = ("failed to access", "could not enter raw repl", "no device found", "could not open", "Errno 5")
_DEFAULT_WIFI_PLACEHOLDER = "YOUR-SSID"


class DeployError(Exception):
    """A failure with a message for the user; the command prints it and exits 1."""


# ---- config ----------------------------------------------------------------------------------------------------

# boards/esp32 keys, checked here so a typo fails on the host and not on a board in the field; defaults live in
# boards/esp32/boot.py and main.py (schema: docs/firmware.md).
_WIFI_KEYS = {"ssid": str, "password": str, "hostname": str, "tries": int, "timeout": float, "backoff": float,
              "backoff_max": float}
_BOARD_KEYS = {"status": float, "status_subject": str, "watchdog": float, "restart_delay": float,
               "wifi_check": float}


def _check_section(cfg: dict, section: str, keys: dict[str, type]) -> None:
    d = cfg.get(section)
    if d is None:
        return
    if not isinstance(d, dict):
        raise DeployError(f'config: "{section}": expected an object or null, got {json.dumps(d)}')
    for k, v in d.items():
        if k not in keys:
            raise DeployError(f'config: unknown key "{section}.{k}" (known: {", ".join(keys)})')
        want = keys[k]
        if v is None:
            continue
        if want is str:
            ok = isinstance(v, str)
            expected = "a string"
        else:
            ok = isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0
            if want is int:
                ok = ok and isinstance(v, int) and v >= 1
            expected = "an integer >= 1" if want is int else "a number >= 0"
        if not ok:
            raise DeployError(f'config: "{section}.{k}": expected {expected}, got {json.dumps(v)}')


def check_config(path: Path) -> dict:
    """Parse and check a site config: the edge's keys with edge/leaf/config.py, the board's keys here."""
    try:
        text = path.read_text()
    except OSError as e:
        raise DeployError(f"config: cannot read {path}: {e}") from None
    try:
        raw = json.loads(text)
    except ValueError as e:
        raise DeployError(f"config: {path} is not valid JSON: {e}") from None
    from edge.leaf import config as edge_config

    try:
        edge_config.check(raw)
    except edge_config.ConfigError as e:
        raise DeployError(f"{path}: {e}") from None
    _check_section(raw, "wifi", _WIFI_KEYS)
    _check_section(raw, "board", _BOARD_KEYS)
    wifi = raw.get("wifi")
    if wifi and not wifi.get("ssid"):
        raise DeployError('config: "wifi.ssid": expected a non-empty string (or drop "wifi" to skip Wi-Fi)')
    return raw


# ---- mpremote --------------------------------------------------------------------------------------------------


class Board:
    """mpremote sessions with one board: each call is `mpremote connect PORT [resume] ...` as a subprocess."""

    def __init__(self, port: str, resume: bool = True, mpremote: str | None = None, timeout: float = 30.0):
        self.port = port
        self.resume = resume
        self.timeout = timeout
        if mpremote:
            self.base = [mpremote]
        else:
            try:
                import mpremote as _mpremote  # noqa: F401
            except ImportError:
                exe = shutil.which("mpremote")
                if not exe:
                    raise DeployError("mpremote not found: it comes with natsedge (pip install --force-reinstall "
                                      "natsedge), or pass --mpremote PATH") from None
                self.base = [exe]
            else:
                self.base = [sys.executable, "-m", "mpremote"]

    def command(self, *args: str) -> list[str]:
        return self.base + ["connect", self.port] + (["resume"] if self.resume else []) + list(args)

    def _fail(self, what: str, out: str, rc: int | None) -> DeployError:
        text = out.strip()
        if any(s.lower() in text.lower() for s in NO_BOARD):
            last = text.splitlines()[-1] if text else ""
            return DeployError(f"no board answered on {self.port} ({what}): {last}\n"
                               f"check the port; a program that does not stop on Ctrl-C (or, on the unix port, "
                               f"any running program) keeps mpremote out")
        return DeployError(f"mpremote {what} on {self.port} failed (exit code {rc}):\n{text}")

    def run(self, what: str, *args: str, timeout: float | None = None) -> str:
        """Run one session and return its output; DeployError on failure or timeout."""
        timeout = timeout or self.timeout
        try:
            r = subprocess.run(self.command(*args), capture_output=True, text=True, timeout=timeout,
                               env=_unbuffered_env())
        except subprocess.TimeoutExpired:
            raise DeployError(f"no answer from the board on {self.port} within {timeout:.0f} s ({what}); is a "
                              f"program running there that mpremote cannot interrupt?") from None
        except OSError as e:
            raise DeployError(f"cannot run mpremote: {e}") from None
        if r.returncode != 0:
            raise self._fail(what, r.stdout + r.stderr, r.returncode)
        return r.stdout

    def stream(self, what: str, args: list[str], on_line, timeout: float) -> None:
        """Run one session, calling on_line for each line of output as it arrives."""
        try:
            p = subprocess.Popen(self.command(*args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 env=_unbuffered_env())
        except OSError as e:
            raise DeployError(f"cannot run mpremote: {e}") from None
        assert p.stdout is not None
        fd = p.stdout.fileno()
        deadline = time.monotonic() + timeout
        out = b""
        pending = b""
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise DeployError(f"copying to {self.port} did not finish within {timeout:.0f} s")
                ready, _, _ = select.select([fd], [], [], min(left, 1.0))
                if not ready:
                    continue
                chunk = os.read(fd, 4096)  # raw reads: no buffer that select cannot see
                if not chunk:
                    break
                out += chunk
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    on_line(line.decode(errors="replace").rstrip("\r"))
            if pending:
                on_line(pending.decode(errors="replace"))
            rc = p.wait(timeout=max(1.0, deadline - time.monotonic()))
        except (DeployError, subprocess.TimeoutExpired):
            p.kill()
            p.wait()
            raise
        finally:
            p.stdout.close()
        if rc != 0:
            raise self._fail(what, out.decode(errors="replace"), rc)


def _unbuffered_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"  # progress lines as they happen, not when the pipe buffer fills
    return env


# Scripts run on the board. They use only what every MicroPython port has; one JSON line answers.
_PROBE = """\
import sys, os, gc, json
def _mk(p):
    try:
        os.mkdir(p)
    except OSError:
        pass
for _d in %(dirs)r:
    _mk(_d)
try:
    import edge
    _e = getattr(edge, '__file__', '')
except Exception:
    _e = ''
gc.collect()
print('NATSEDGE ' + json.dumps({'platform': sys.platform, 'mpy': getattr(sys.implementation, '_mpy', 0),
  'version': '.'.join(str(x) for x in sys.implementation.version[:3]), 'free': gc.mem_free(), 'edge': _e}))
"""

_VERIFY = """\
import os, hashlib, binascii
def _h(p):
    d = hashlib.sha256()
    b = bytearray(512)
    m = memoryview(b)
    with open(p, 'rb') as f:
        while True:
            n = f.readinto(b)
            if not n:
                break
            d.update(m[:n])
    return binascii.hexlify(d.digest()).decode()
for _p in %(paths)r:
    try:
        print('NATSEDGE H %%s %%s' %% (_p, _h(_p)))
    except OSError:
        print('NATSEDGE H %%s -' %% _p)
_keep = %(keep)r
def _walk(d):
    for _e in os.ilistdir(d):
        _f = d + '/' + _e[0]
        if _e[1] == 0x4000:
            _walk(_f)
            try:
                os.rmdir(_f)
            except OSError:
                pass
        elif _f not in _keep:
            os.remove(_f)
            print('NATSEDGE R ' + _f)
try:
    _walk(%(root)r)
except OSError:
    pass
"""


def _answer(out: str, what: str) -> dict:
    for line in out.splitlines():
        if line.startswith("NATSEDGE {"):
            return json.loads(line[len("NATSEDGE "):])
    raise DeployError(f"unexpected answer from the board ({what}):\n{out.strip()}")


# ---- deploy ----------------------------------------------------------------------------------------------------


def plan_files(manifest: dict | None, bundle: Path | None, config: Path, boot: bool) -> list[tuple[Path, str, str]]:
    """(local file, device path, sha256) in copy order: bundle, config, boot.py, main.py last."""
    files = []
    if manifest is not None and bundle is not None:
        for f in manifest["files"]:
            files.append((bundle / f["path"], f"{DEVICE_LIB}/{f['path']}", f["sha256"]))
    files.append((config, DEVICE_CONFIG, sha256_file(config)))
    names = ["boot.py", "main.py"] if boot else ["main.py"]
    for name in names:
        p = BOARD_DIR / name
        files.append((p, name, sha256_file(p)))
    return files


def _device_dirs(files: list[tuple[Path, str, str]]) -> list[str]:
    dirs: list[str] = []
    for _, dev, _ in files:
        parts = dev.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            d = "/".join(parts[:i])
            if d not in dirs:
                dirs.append(d)
    return dirs


def deploy(args: argparse.Namespace) -> int:
    config = Path(args.config)
    cfg = check_config(config)
    name = cfg["name"]
    wifi = cfg.get("wifi") or {}
    if wifi.get("ssid") == _DEFAULT_WIFI_PLACEHOLDER:
        print(f"warning: {config} still has the example Wi-Fi SSID {_DEFAULT_WIFI_PLACEHOLDER!r}")
    board = Board(args.port, resume=not args.no_resume, mpremote=args.mpremote, timeout=args.timeout)

    tmp = None
    manifest = bundle = None
    try:
        if not args.no_bundle:
            if args.bundle:
                bundle = Path(args.bundle)
                manifest = load_manifest(bundle)
                print(f"bundle {bundle}: {len(manifest['files'])} files, {manifest['total']:,} B")
            else:
                tmp = tempfile.TemporaryDirectory(prefix="natsedge-bundle-")
                bundle = Path(tmp.name)
                manifest = build_bundle(bundle, args.mpy_cross, args.target_mpy, args.budget,
                                        with_packages=packages_for(cfg))
                print(format_report(manifest))
            if manifest["total"] > manifest["budget"]:
                raise DeployError(f"the bundle is {manifest['total']:,} B, over its {manifest['budget']:,} B budget")
            have = {f["path"] for f in manifest["files"]}
            lacking = [p for p in packages_for(cfg) if not any(f.startswith(f"edge/{p}/") for f in have)]
            if lacking:
                raise DeployError(f"{config} uses {', '.join(lacking)} but bundle {bundle} was built without it: "
                                  f"build it with `natsedge firmware bundle --with {' --with '.join(lacking)}`")
            missing = [p.stem + ".mpy" for p in board_modules(BOARD) if p.stem + ".mpy" not in have]
            if missing:
                raise DeployError(f"bundle {bundle} lacks {', '.join(missing)}, which main.py imports: build it with "
                                  f"`natsedge firmware bundle --board {BOARD}`")
        files = plan_files(manifest, bundle, config, boot=not args.no_boot)
        return _deploy_files(board, args, name, manifest, files)
    finally:
        if tmp is not None:
            tmp.cleanup()


def packages_for(cfg: dict) -> tuple[str, ...]:
    """The optional edge packages a site config needs (a "kv" section needs kvcache, "hub.creds" needs auth)."""
    def has(key: str) -> bool:
        v: object = cfg
        for part in key.split("."):
            v = v.get(part) if isinstance(v, dict) else None
        return bool(v)

    return tuple(pkg for pkg, keys in OPTIONAL_PACKAGES.items() if any(has(k) for k in keys))


def _deploy_files(board: Board, args: argparse.Namespace, name: str, manifest: dict | None,
                  files: list[tuple[Path, str, str]]) -> int:
    t0 = time.monotonic()
    mode = "resume" if board.resume else "soft reset"
    print(f"probing {board.port} (mpremote connect, {mode}) ...", flush=True)
    info = _answer(board.run("probe", "exec", _PROBE % {"dirs": _device_dirs(files)}), "probe")
    mpy = info["mpy"]
    print(f"board: {info['platform']}, MicroPython {info['version']}, .mpy v{mpy & 0xFF}.{(mpy >> 8) & 3}, "
          f"{info['free']:,} B free heap")
    if manifest is not None:
        want, _ = parse_target(manifest["target_mpy"])
        if mpy and (mpy & 0xFF) != want:
            raise DeployError(f"the board loads .mpy v{mpy & 0xFF}, the bundle is v{manifest['target_mpy']}: flash a "
                              f"newer MicroPython (natsedge flash) or rebuild with a matching --target-mpy")
        if info["edge"].startswith(".frozen"):
            print("note: this firmware freezes `edge`; '.frozen' comes before 'lib' in sys.path, so the frozen copy "
                  "runs and the bundle in lib/ is ignored (use --no-bundle)")
    elif not info["edge"]:
        print("warning: --no-bundle, and the board has no `edge` package (frozen or in lib/): main.py will fail "
              "to import it")

    total = sum(p.stat().st_size for p, _, _ in files)
    n = len(files)
    cp: list[str] = []
    for local, dev, _ in files:
        cp += ["fs", "cp"] + (["-f"] if args.force else []) + [str(local), ":" + dev, "+"]
    cp.pop()
    sizes = {dev: local.stat().st_size for local, dev, _ in files}
    state = {"i": 0, "unchanged": 0}

    def on_line(line: str) -> None:
        # mpremote prints "cp SRC :DEST" before each file and "Up to date: DEST" when the hash already matched.
        if line.startswith("cp "):
            state["i"] += 1
            dev = line.rsplit(" :", 1)[-1]
            print(f"[{state['i']:>2}/{n}] {dev} ({sizes.get(dev, 0):,} B)", flush=True)
        elif line.startswith("Up to date:"):
            state["unchanged"] += 1
            print("        unchanged on the board", flush=True)
        elif line.strip():
            print("        " + line, flush=True)

    print(f"copying {n} files, {total:,} B ...", flush=True)
    board.stream("copy", cp, on_line, timeout=args.timeout + total / COPY_BYTES_PER_S)
    copied = state["i"] - state["unchanged"]

    expected = {dev: h for _, dev, h in files}
    keep = [dev for dev in expected if dev.startswith(f"{DEVICE_LIB}/edge/")]
    # lib/edge belongs to the bundle: prune it only when a bundle was deployed (never with --no-bundle)
    root = f"{DEVICE_LIB}/edge" if manifest is not None else "-"
    script = _VERIFY % {"paths": list(expected), "keep": keep, "root": root}
    out = board.run("verify", "exec", script)
    seen: dict[str, str] = {}
    for line in out.splitlines():
        if line.startswith("NATSEDGE H "):
            _, _, path, digest = line.split(" ", 3)
            seen[path] = digest
        elif line.startswith("NATSEDGE R "):
            print(f"removed stale {line[len('NATSEDGE R '):]}")
    bad = [dev for dev, h in expected.items() if seen.get(dev) != h]
    for dev in bad:
        got = seen.get(dev)
        print(f"MISMATCH {dev}: " + ("missing on the board" if got in (None, "-") else f"sha256 {got[:16]}..., "
                                     f"expected {expected[dev][:16]}..."), file=sys.stderr)
    if bad:
        raise DeployError(f"{len(bad)} of {n} files did not land intact on {board.port}; run deploy again "
                          f"(add --force to copy everything)")
    dt = time.monotonic() - t0
    print(f"verified {n} files by sha256 on the board ({copied} copied, {n - copied} unchanged, {total:,} B) "
          f"in {dt:.1f} s")

    if args.reset:
        if info["platform"] == "linux":
            print("--reset: the unix port has no machine.reset(); restart the process (or use --run) instead")
        else:
            print("resetting the board (machine.reset) ...")
            try:
                board.run("reset", "exec", "--no-follow", "import machine; machine.reset()", timeout=15)
            except DeployError as e:  # the port may vanish under mpremote as the board resets
                print(f"note: {str(e).splitlines()[0]}")
    if args.run:
        board.run("run", "exec", "--no-follow", "import main")
        print(f"main.py started on the board; watch it with `natsedge console --port {board.port} --log`")
    print(f"deployed edge {name!r} to {board.port}")
    return 0


# ---- console ---------------------------------------------------------------------------------------------------


def console(args: argparse.Namespace) -> int:
    if not args.log:
        if not sys.stdin.isatty():
            raise DeployError("the REPL needs a terminal on stdin; from a script use --log (read-only) or "
                              "`mpremote connect PORT resume exec ...`")
        board = Board(args.port, resume=not args.no_resume, mpremote=args.mpremote)
        try:
            return subprocess.call(board.command("repl"))
        except KeyboardInterrupt:
            return 0
    return read_log(args.port, args.baud, args.seconds, args.until)


def read_log(port: str, baud: int, seconds: float | None, until: str | None) -> int:
    """Copy what the board prints to stdout without sending anything. Returns 0, or 1 when --until never matched."""
    try:
        fd = os.open(port, os.O_RDONLY | os.O_NOCTTY | os.O_NONBLOCK)
    except OSError as e:
        raise DeployError(f"cannot open {port}: {e.strerror}") from None
    try:
        if os.isatty(fd):
            tty.setraw(fd, termios.TCSANOW)  # TCSAFLUSH would drop what the board printed before
            attrs = termios.tcgetattr(fd)
            speed = getattr(termios, f"B{baud}", None)
            if speed is not None:
                attrs[4] = attrs[5] = speed
            termios.tcsetattr(fd, termios.TCSANOW, attrs)
        deadline = None if seconds is None else time.monotonic() + seconds
        tail = b""
        needle = until.encode() if until else None
        out = sys.stdout.buffer
        while deadline is None or time.monotonic() < deadline:
            wait = 0.5 if deadline is None else max(0.0, min(0.5, deadline - time.monotonic()))
            ready, _, _ = select.select([fd], [], [], wait)
            if not ready:
                continue
            try:
                data = os.read(fd, 4096)
            except BlockingIOError:
                continue
            except OSError as e:  # EIO: the other side of the PTY (the board) went away
                print(f"\nnatsedge console: {port} closed ({e.strerror})", file=sys.stderr)
                return 1 if needle else 0
            if not data:
                continue
            out.write(data)
            out.flush()
            if needle is not None:
                tail = (tail + data)[-(len(needle) + 4096):]
                if needle in tail:
                    return 0
        return 1 if needle else 0
    except KeyboardInterrupt:
        return 0
    finally:
        os.close(fd)


# ---- command line ----------------------------------------------------------------------------------------------


def add_deploy_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--port", required=True, help="serial port of the board (or a virtual board's PTY)")
    p.add_argument("--config", required=True, help="site config JSON, copied to the board as /config.json")
    p.add_argument("--bundle", help="bundle folder from `natsedge firmware bundle` (default: build one now)")
    p.add_argument("--no-bundle", action="store_true", help="copy no .mpy (the firmware freezes edge)")
    p.add_argument("--no-boot", action="store_true", help="leave the board's boot.py alone (no Wi-Fi set-up)")
    p.add_argument("--reset", action="store_true", help="machine.reset() at the end (skipped on the unix port)")
    p.add_argument("--run", action="store_true", help="start main.py at the end without a reset (exec --no-follow)")
    p.add_argument("--force", action="store_true", help="copy every file even when its hash already matches")
    p.add_argument("--no-resume", action="store_true",
                   help="let mpremote soft-reset the board first (it ends a bare unix port; natsedge vboard restarts)")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds allowed per mpremote session (default 30)")
    p.add_argument("--mpremote", help="mpremote executable (default: python -m mpremote)")
    p.add_argument("--mpy-cross", help="mpy-cross executable, when the bundle is built here")
    p.add_argument("--target-mpy", default=DEFAULT_TARGET_MPY, help="bundle .mpy version, when built here")
    p.add_argument("--budget", type=float, default=None,
                   help=f"bundle size budget in KB, when built here (default {DEFAULT_BUDGET_KB}, more with kvcache "
                        "or auth)")


def add_console_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--port", required=True, help="serial port of the board (or a virtual board's PTY)")
    p.add_argument("--log", action="store_true", help="only read and print the board's output (sends nothing)")
    p.add_argument("--baud", type=int, default=115200, help="baud rate for --log on a real serial port")
    p.add_argument("--seconds", type=float, default=None, help="with --log: stop after this many seconds")
    p.add_argument("--until", help="with --log: stop with exit code 0 once this text appears (1 if it never does)")
    p.add_argument("--no-resume", action="store_true", help="let mpremote soft-reset the board first")
    p.add_argument("--mpremote", help="mpremote executable (default: python -m mpremote)")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """`natsedge deploy ...` or `natsedge console ...`, by the name the parser was registered under."""
    if p.prog.split()[-1] == "console":
        add_console_arguments(p)
        p.set_defaults(board_run=console)
    else:
        add_deploy_arguments(p)
        p.set_defaults(board_run=deploy)


def run(args: argparse.Namespace) -> int:
    prog = "natsedge console" if args.board_run is console else "natsedge deploy"
    try:
        return args.board_run(args)
    except (DeployError, FirmwareError) as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 1


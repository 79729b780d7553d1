"""`natsedge vboard`: a virtual board, the MicroPython unix port behind a pseudo-terminal.

``natsedge vboard --flash DIR --port PATH`` gives mpremote, ``natsedge deploy`` and ``natsedge console`` a serial port
to talk to without hardware, and with no tool beyond Python (no socat). Two pseudo-terminals are joined here:

* the board's: MicroPython's stdin/stdout/stderr, so it runs its REPL (friendly and raw, as on a board), started in
  DIR (its "flash": files copied with ``mpremote fs cp :x`` land there) with ``MICROPYPATH=:.frozen:lib``, close
  to ESP32's ``sys.path`` of ``['', '.frozen', '/lib']``;
* the user's: PATH is a symlink to it (``/dev/pts/N``); it stays open here, so tools can connect and leave at will
  and the board keeps running between sessions (``mpremote connect PATH resume ...``).

A relay copies bytes between the two and adds what a board's UART and firmware do that a bare unix port does not:

* **Ctrl-C interrupts a running program.** While MicroPython runs code with its interrupt character on (it then
  catches SIGINT; ``micropython.kbd_intr(-1)`` turns it off, as mpremote's mount does), a 0x03 byte from the user
  becomes a SIGINT and is not passed on; otherwise it is an ordinary byte (the REPL's own Ctrl-C). Input that
  follows an interrupt (or a start) waits until the REPL has printed its prompt: the unix port flushes its terminal
  input when it switches modes (``tcsetattr(TCSAFLUSH)``), which would eat mpremote's Ctrl-A.
* **Soft reset.** The unix port exits on Ctrl-D at the REPL (and on ``sys.exit()``); the relay then prints
  ``MPY: soft reboot`` and starts it again in the same folder, back in the raw REPL if that is where it was, as
  mpremote's soft reset expects. So ``mpremote connect PATH exec ...`` works without ``resume`` too.
* **Boot.** Each start runs ``boot.py`` and then, unless the REPL is in raw mode, ``main.py`` when they exist
  (``--no-boot``: neither), as MicroPython does on a board; Ctrl-C stops ``main.py`` and leaves the REPL.
* **A UART drops what nobody reads.** Of the output nobody reads, the newest OUT_BUFFER bytes are kept; the board
  never waits for a reader.

Linux only (the interrupt rule reads ``/proc/PID/status``; elsewhere 0x03 is always an ordinary byte).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import select
import signal
import subprocess
import sys
import termios
import threading
import time
import tty
from collections.abc import Callable
from pathlib import Path

from host.tools import needs

DEFAULT_HEAPSIZE = 200_000
MICROPYPATH = ":.frozen:lib"
OUT_BUFFER = 64 * 1024  # output kept for a user who is not reading, newest bytes
IN_BUFFER = 64 * 1024  # input accepted from the user before the board reads it (beyond that the user's writes wait)
HOLD_AFTER_INTERRUPT = 1.0  # s: longest wait for the REPL after a Ctrl-C (a program may catch KeyboardInterrupt)
HOLD_AFTER_START = 5.0  # s: longest wait for the REPL after a start (main.py may run on)
MIN_LIFETIME = 1.0  # s: a board that exits this soon, not asked to by a Ctrl-D, restarts after a pause (no spinning)

SIGINT_BIT = 1 << (signal.SIGINT - 1)
RAW_REPL_BANNER = b"raw REPL; CTRL-B to exit\r\n"
FRIENDLY_BANNER = b'Type "help()" for more information.'

# Run at every start with `micropython -i -c`: boot.py, then main.py (not in the raw REPL), as a board's firmware does.
# execfile runs them in __main__'s globals, as pyexec_file does; SystemExit ends the process, which is a soft reset.
BOOT = """\
def _vboard_boot(files):
    import os, sys
    for f in files:
        try:
            os.stat(f)
        except OSError:
            continue
        try:
            execfile(f)
        except KeyboardInterrupt as e:
            sys.print_exception(e)
            return
        except SystemExit:
            raise
        except BaseException as e:
            sys.print_exception(e)
_vboard_boot(%r)
del _vboard_boot
"""


class VBoardError(Exception):
    """The board cannot start; the command prints the message and exits 1."""


def _termios_board(fd: int) -> None:
    """The board side: raw bytes both ways, as socat's `raw,echo=0` was (the REPL writes \\r\\n itself)."""
    attrs = termios.tcgetattr(fd)
    attrs[0] = 0  # iflag
    attrs[1] = 0  # oflag
    attrs[2] = termios.CS8 | termios.CREAD | termios.CLOCAL
    attrs[3] = 0  # lflag: no echo, no line editing, no signals
    attrs[6][termios.VMIN] = 1
    attrs[6][termios.VTIME] = 0
    termios.tcsetattr(fd, termios.TCSANOW, attrs)


def _catches_sigint(pid: int) -> bool | None:
    """Does the process catch SIGINT now (MicroPython running code with its interrupt char on)? None: unknown."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("SigCgt:"):
                    return bool(int(line.split()[1], 16) & SIGINT_BIT)
    except (OSError, ValueError, IndexError):
        pass
    return None


class VirtualBoard:
    """The MicroPython unix port behind a PTY. `start()` runs the relay in a thread; `serve()` runs it in the
    calling thread until `stop()` (or a signal handler that calls it)."""

    def __init__(self, flash: Path | str, port: Path | str | None = None, *, micropython: str | None = None,
                 heapsize: int = DEFAULT_HEAPSIZE, boot: bool = True, log: Callable[[str], None] | None = None):
        self.flash = Path(flash).resolve()
        self.port = str(port) if port is not None else str(self.flash.parent / f"{self.flash.name}.pty")
        self.micropython = needs.micropython("natsedge vboard", "sim", micropython)
        self.heapsize = heapsize
        self.boot = boot
        self.log = log or (lambda msg: None)
        self.proc: subprocess.Popen[bytes] | None = None
        self.boots = 0
        self._board = -1  # master of the board's PTY
        self._user = -1  # master of the user's PTY
        self._user_slave = -1  # held open: users come and go without the relay seeing EIO
        self._stop = threading.Event()
        self._wake_r, self._wake_w = -1, -1
        self._thread: threading.Thread | None = None
        self._out = bytearray()  # board -> user, not yet written
        self._in = bytearray()  # user -> board, not yet written
        self._hold_until = 0.0  # input waits for the REPL until then (after a start or an interrupt)
        self._last_intr = 0.0
        self._last_eot = 0.0  # when the user last sent Ctrl-D (a soft reset asked for)
        self._raw = False  # the REPL was in raw mode when last seen (kept across a soft reset, as on a board)
        self._enter_raw = False  # after a soft reset in the raw REPL: send Ctrl-A once the new REPL has its prompt
        self._tail = b""  # the last output bytes, to spot the REPL banners across reads
        self._started_at = 0.0

    # ---- life cycle ----------------------------------------------------------------------------------------------

    def open(self) -> VirtualBoard:
        """Create the user's PTY and its link, and start MicroPython. Raises VBoardError."""
        self.flash.mkdir(parents=True, exist_ok=True)
        link = Path(self.port)
        if link.is_symlink() or link.exists():
            if not link.is_symlink():
                raise VBoardError(f"{link} exists and is not a link to a PTY; choose another --port")
            link.unlink()  # a stale link from a board that was killed
        self._user, self._user_slave = os.openpty()
        tty.setraw(self._user_slave)
        os.set_blocking(self._user, False)
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        try:
            link.symlink_to(os.ttyname(self._user_slave))
        except OSError as e:
            self._close_fds()
            raise VBoardError(f"cannot create {link}: {e}") from None
        try:
            self._spawn()
        except BaseException:
            self.close()
            raise
        return self

    def start(self) -> VirtualBoard:
        """open() and run the relay in a daemon thread."""
        self.open()
        self._thread = threading.Thread(target=self.serve, name=f"vboard {self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Ask the relay to end (safe from a signal handler or another thread); with start(), also wait and close."""
        self._stop.set()
        if self._wake_w >= 0:
            with contextlib.suppress(OSError):
                os.write(self._wake_w, b"x")
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(10)
            self._thread = None
            self.close()

    def close(self) -> None:
        """Stop MicroPython, remove the link, close the PTYs."""
        self._kill()
        with contextlib.suppress(OSError):
            if os.path.islink(self.port):
                os.unlink(self.port)
        self._close_fds()

    def _close_fds(self) -> None:
        for name in ("_board", "_user", "_user_slave", "_wake_r", "_wake_w"):
            fd = getattr(self, name)
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
                setattr(self, name, -1)

    def __enter__(self) -> VirtualBoard:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- the MicroPython process ---------------------------------------------------------------------------------

    def command(self) -> list[str]:
        # `-c` also with --no-boot: running code once leaves SIGINT to MicroPython (its REPL does not catch it; the
        # CPython that hosts the PyPI build would, before MicroPython runs anything)
        files = () if not self.boot else ("boot.py",) if self._raw else ("boot.py", "main.py")
        return [self.micropython, "-X", f"heapsize={self.heapsize}", "-i", "-c", BOOT % (files,)]

    def _spawn(self) -> None:
        board, slave = os.openpty()
        try:
            _termios_board(slave)
            env = dict(os.environ, MICROPYPATH=MICROPYPATH)
            env.pop("MICROPYINSPECT", None)
            try:
                self.proc = subprocess.Popen(self.command(), stdin=slave, stdout=slave, stderr=slave, cwd=self.flash,
                                             env=env, start_new_session=True)
            except OSError as e:
                os.close(board)
                raise VBoardError(f"cannot start {self.micropython}: {e}") from None
        finally:
            os.close(slave)  # the child holds it now: its exit makes reads of `board` fail with EIO
        os.set_blocking(board, False)
        self._board = board
        self.boots += 1
        self._started_at = time.monotonic()
        self._hold_until = self._started_at + HOLD_AFTER_START  # input waits for the REPL (or main.py to run on)
        self._tail = b""
        self.log(f"board started: pid {self.proc.pid}, {'raw REPL' if self._raw else 'boot'} "
                 f"(start {self.boots})")

    def _kill(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._board >= 0:
            with contextlib.suppress(OSError):
                os.close(self._board)
            self._board = -1

    def _at_prompt(self) -> bool:
        """Has MicroPython's REPL printed its prompt (">" raw, ">>> " friendly) and stopped running code? Input sent
        before that may be flushed by the REPL's switch of terminal modes."""
        return (self._tail.endswith((b">", b">>> ")) and self.proc is not None
                and not _catches_sigint(self.proc.pid))

    def _reboot(self) -> None:
        proc, self.proc = self.proc, None
        code = None
        if proc is not None:
            try:
                code = proc.wait(5)
            except subprocess.TimeoutExpired:  # it closed its terminal but runs on
                proc.kill()
                code = proc.wait()
        os.close(self._board)
        self._board = -1
        lived = time.monotonic() - self._started_at
        self.log(f"board exited (code {code}) after {lived:.1f} s: soft reboot")
        self._queue_out(b"MPY: soft reboot\r\n")
        self._in.clear()  # what was sent to the old process is gone with it
        if lived < MIN_LIFETIME and time.monotonic() - self._last_eot > MIN_LIFETIME:
            self._stop.wait(MIN_LIFETIME)
            if self._stop.is_set():
                return
        self._spawn()
        if self._raw:
            self._enter_raw = True

    # ---- the relay -----------------------------------------------------------------------------------------------

    def _queue_out(self, data: bytes) -> None:
        self._out += data
        if len(self._out) > OUT_BUFFER:
            del self._out[:-OUT_BUFFER]
            # the user's terminal queue holds older bytes still: drop them too, so a reader sees the newest
            with contextlib.suppress(termios.error):
                termios.tcflush(self._user_slave, termios.TCIFLUSH)

    def _from_board(self, data: bytes) -> None:
        seen = self._tail + data
        self._tail = seen[-64:]
        r = seen.rfind(RAW_REPL_BANNER)
        f = seen.rfind(FRIENDLY_BANNER)
        if r >= 0 or f >= 0:
            self._raw = r > f
        self._queue_out(data)

    def _from_user(self, data: bytes) -> None:
        if b"\x04" in data:
            self._last_eot = time.monotonic()
        if b"\x03" not in data or self.proc is None:
            self._in += data
            return
        for i in range(len(data)):
            c = data[i:i + 1]
            if c != b"\x03":
                self._in += c
                continue
            if _catches_sigint(self.proc.pid):
                now = time.monotonic()
                if now - self._last_intr > 0.2:  # a second SIGINT before the first is handled ends the unix port
                    self._last_intr = now
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(self.proc.pid, signal.SIGINT)
                    self._hold_until = now + HOLD_AFTER_INTERRUPT
                    self._tail = b""  # the prompt to wait for is one printed from now on
                    self._in.clear()  # typed before the interrupt: the board would not have read it either
            else:
                self._in += c

    def _hold_active(self) -> bool:
        if self._hold_until == 0.0:
            return False
        if time.monotonic() >= self._hold_until or self._at_prompt():
            self._hold_until = 0.0
            if self._enter_raw:
                self._enter_raw = False
                self._in[:0] = b"\x01"  # back to the raw REPL, as a board's soft reset keeps it
            return False
        return True

    def serve(self) -> None:
        """Relay until stop(); MicroPython is restarted whenever it exits (a soft reset)."""
        try:
            while not self._stop.is_set():
                self._step()
        finally:
            if self._thread is None:
                self.close()

    def _step(self) -> None:
        holding = self._hold_active()
        rlist = [self._wake_r, self._board]
        if len(self._in) < IN_BUFFER:
            rlist.append(self._user)
        wlist = []
        if self._out:
            wlist.append(self._user)
        if self._in and not holding:
            wlist.append(self._board)
        try:
            r, w, _ = select.select(rlist, wlist, [], 0.02 if holding else 1.0)
        except InterruptedError:
            return
        if self._wake_r in r:
            with contextlib.suppress(OSError):
                os.read(self._wake_r, 64)
        if self._board in r:
            try:
                data = os.read(self._board, 65536)
            except BlockingIOError:
                data = None
            except OSError as e:
                if e.errno != errno.EIO:
                    raise
                data = b""
            if data:
                self._from_board(data)
            elif data == b"":  # EIO: MicroPython exited
                if not self._stop.is_set():
                    self._reboot()
                return
        if self._user in r:
            try:
                data = os.read(self._user, 65536)
            except (BlockingIOError, OSError):
                data = b""
            if data:
                self._from_user(data)
        if self._user in w and self._out:
            with contextlib.suppress(BlockingIOError):
                n = os.write(self._user, self._out)
                del self._out[:n]
        if self._board in w and self._in:
            # OSError: MicroPython is exiting (EIO); the next read of `board` sees it and reboots
            with contextlib.suppress(OSError):
                n = os.write(self._board, self._in)
                del self._in[:n]


# ---- the command ---------------------------------------------------------------------------------------------------


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = ("A virtual board: the MicroPython unix port behind a pseudo-terminal, for mpremote, natsedge "
                     "deploy and natsedge console. Ctrl-C (or SIGTERM) stops it.")
    p.add_argument("--flash", metavar="DIR", default="vboard",
                   help="the board's flash: the folder it runs in and mpremote copies to (default: ./vboard)")
    p.add_argument("--port", metavar="PATH", help="the serial port to create, a link to a PTY (default: DIR.pty)")
    p.add_argument("--heapsize", type=int, default=DEFAULT_HEAPSIZE, metavar="BYTES",
                   help=f"MicroPython's heap (-X heapsize; default {DEFAULT_HEAPSIZE})")
    p.add_argument("--no-boot", action="store_true", help="do not run boot.py and main.py when the board starts")
    p.add_argument("--micropython", metavar="PATH", help="the MicroPython unix binary (default: next to Python)")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the ready line")


def run(args: argparse.Namespace) -> int:
    def log(msg: str) -> None:
        if not args.quiet:
            print(f"vboard: {msg}", file=sys.stderr, flush=True)

    if args.heapsize < 8192:
        print("natsedge vboard: error: --heapsize must be >= 8192", file=sys.stderr)
        return 2
    try:
        board = VirtualBoard(args.flash, args.port, micropython=args.micropython, heapsize=args.heapsize,
                             boot=not args.no_boot, log=log).open()
    except VBoardError as e:
        print(f"natsedge vboard: error: {e}", file=sys.stderr)
        return 1

    def on_signal(signum: int, frame: object) -> None:
        board.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    print(f"vboard: port {board.port} (-> {os.ttyname(board._user_slave)}), flash {board.flash}, "
          f"{board.micropython} -X heapsize={board.heapsize}", flush=True)
    print(f"vboard: try `mpremote connect {board.port} resume repl`; Ctrl-C stops the board", flush=True)
    try:
        board.serve()
    except VBoardError as e:  # a restart failed
        print(f"natsedge vboard: error: {e}", file=sys.stderr)
        return 1
    log("stopped")
    return 0

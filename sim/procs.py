"""Child processes of the simulator: started in their own process group, tracked by PID, stopped by PID.

Own process group: a Ctrl-C in the terminal reaches the simulator only, which then stops the fleet in order (stop
barrier, SIGINT to edges, SIGTERM to the hub) instead of every process dying at once mid-report.
PR_SET_PDEATHSIG (Linux): if the simulator itself is killed, the kernel sends SIGKILL to the children, so a hard
kill leaves no orphans either.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path

_PR_SET_PDEATHSIG = 1


def _child_setup() -> Callable[[], None] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:
        return None
    prctl = libc.prctl

    def setup() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)

    return setup


_SETUP = _child_setup()


class ProcessTable:
    """Every process the simulator starts; `left_running()` after `stop_all()` is the check that none leaked."""

    def __init__(self) -> None:
        self.started: list[asyncio.subprocess.Process] = []

    async def spawn(self, cmd: list[str], cwd: Path, env: dict[str, str], log: Path | None = None,
                    pipe: bool = False) -> asyncio.subprocess.Process:
        """stdout+stderr go to `log` (appended), or to a pipe the caller reads when `pipe`."""
        out: int | object = asyncio.subprocess.DEVNULL
        logf = None
        if pipe:
            out = asyncio.subprocess.PIPE
        elif log is not None:
            logf = open(log, "ab")  # noqa: SIM115 (handed to the child; closed right after the spawn)
            out = logf
        try:
            proc = await asyncio.create_subprocess_exec(
                *cmd, cwd=str(cwd), env=env, stdin=asyncio.subprocess.DEVNULL, stdout=out,
                stderr=asyncio.subprocess.STDOUT, process_group=0, preexec_fn=_SETUP, limit=1 << 20)
        finally:
            if logf is not None:
                logf.close()
        self.started.append(proc)
        return proc

    def pids(self) -> list[int]:
        return [p.pid for p in self.started]

    def left_running(self) -> list[int]:
        return [p.pid for p in self.started if p.returncode is None and _alive(p.pid)]

    async def stop_all(self, grace: float = 3.0) -> None:
        await asyncio.gather(*(stop(p, signal.SIGTERM, grace) for p in self.started))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


async def stop(proc: asyncio.subprocess.Process, sig: int, grace: float) -> int:
    """Send `sig`; SIGKILL if the process is still there after `grace` seconds; always reaps it."""
    if proc.returncode is None:
        try:
            os.kill(proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            return await asyncio.wait_for(proc.wait(), grace)
        except TimeoutError:
            pass
        try:
            os.kill(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return await proc.wait()


async def kill(proc: asyncio.subprocess.Process) -> int:
    """SIGKILL now (a crash) and reap."""
    if proc.returncode is None:
        try:
            os.kill(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return await proc.wait()

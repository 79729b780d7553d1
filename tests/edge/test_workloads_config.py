"""The "tags" and "workloads" config keys (edge/workloads/config.py through edge/leaf/config.py), the target match
(edge/workloads/engine.py) and what `natsedge workload deploy` refuses before it talks to a hub, with one clear line
each (host/tools/workload_cmd.py)."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest

from edge.leaf.config import ConfigError, check
from edge.workloads.engine import glob_match, targets
from host.tools import workload_cmd
from tests.edge.edgeharness import REPO


def test_defaults_and_the_state_bucket_added_to_the_kv_cache():
    cfg = check({"name": "k1", "workloads": {}})
    assert cfg["workloads"] == {"bucket": "workloads", "dir": None, "max_flash": 32768, "status_ms": 10000,
                                "tags": []}
    b = cfg["kv"]["buckets"]["workloads"]
    assert (b["policy"], b["max_value"]) == ("hub_wins", 2048)
    # a kv section of the user's keeps its buckets and settings, the state bucket is added beside them
    cfg = check({"name": "k1", "tags": ["oven", "floor-2"], "workloads": {"bucket": "wl", "status": 0},
                 "kv": {"buckets": ["config"], "flush_ms": 20}})
    assert sorted(cfg["kv"]["buckets"]) == ["config", "wl"] and cfg["kv"]["flush_ms"] == 20
    assert cfg["workloads"]["tags"] == ["oven", "floor-2"] and cfg["workloads"]["status_ms"] == 0
    # a bucket the user configured is left as configured
    cfg = check({"name": "k1", "workloads": {}, "kv": {"buckets": {"workloads": {"policy": "lww"}}}})
    assert cfg["kv"]["buckets"]["workloads"]["policy"] == "lww"
    assert check({"name": "k1"})["workloads"] is None
    assert check({"name": "k1", "tags": ["oven"]})["workloads"] is None  # tags alone: checked, nothing runs


@pytest.mark.parametrize("doc, message", [
    ({"tags": "oven"}, 'config: "tags": expected a list of tags, got "oven"'),
    ({"tags": ["ok", "two words"]}, 'config: "tags[1]": expected a tag (1-32 of A-Z, a-z, 0-9, - and _), got '
                                    '"two words"'),
    ({"workloads": 5}, 'config: "workloads": expected an object, true or null, got 5'),
    ({"workloads": {"bukket": "x"}}, 'config: unknown key "workloads.bukket"'),
    ({"workloads": {"bucket": "a.b"}}, 'config: "workloads.bucket": expected a bucket name'),
    ({"workloads": {"max_flash": 0}}, 'config: "workloads.max_flash": expected an integer >= 1, got 0'),
    ({"workloads": {"status": -1}}, 'config: "workloads.status": expected a number of seconds >= 0'),
    ({"workloads": {}, "kv": []}, 'config: "kv": expected an object or null, got []'),
])
def test_bad_values_are_one_line_naming_the_key(doc, message):
    with pytest.raises(ConfigError) as e:
        check({"name": "k1", **doc})
    assert str(e.value).startswith(message) and "\n" not in str(e.value)


@pytest.mark.parametrize("pattern, name, hit", [
    ("kitchen-*", "kitchen-1", True), ("kitchen-*", "kitchen-", True), ("kitchen-*", "hall-1", False),
    ("*", "x", True), ("k?tchen-1", "kitchen-1", True), ("k?tchen-1", "ktchen-1", False),
    ("*-1", "kitchen-1", True), ("*-1", "kitchen-12", False), ("a*b*c", "aXbYbZc", True), ("a*b*c", "aXbYc-", False),
    ("kitchen-1", "kitchen-1", True), ("kitchen-1", "kitchen-10", False),
])
def test_glob_match(pattern, name, hit):
    assert glob_match(pattern, name) is hit


def test_targets_by_name_pattern_and_tag():
    assert targets(["hall-1", "tag:oven"], "k9", ["oven"])
    assert targets(["kitchen-*"], "kitchen-3", [])
    assert not targets(["kitchen-*", "tag:oven"], "hall-1", ["fridge"])


def test_glob_match_on_micropython():
    code = ("from edge.workloads.engine import glob_match\n"
            "print(glob_match('kitchen-*', 'kitchen-1'), glob_match('a*b*c', 'aXbYc-'), glob_match('k?', 'k'))")
    from tests.edge.edgeharness import micropython

    r = subprocess.run([micropython(), "-c", f"import sys; sys.path.insert(0, {str(REPO)!r}); " + code.replace(
        "\n", "; ")], capture_output=True, text=True, timeout=30)
    assert r.stdout.split() == ["True", "False", "False"], r.stderr


def test_bad_targets_are_refused():
    assert workload_cmd.parse_target("kitchen-*, tag:oven,hub") == ["kitchen-*", "tag:oven", "hub"]
    with pytest.raises(workload_cmd.WorkloadError, match=r"^--target 'a b': expected edge names, glob patterns"):
        workload_cmd.parse_target("a b")
    with pytest.raises(workload_cmd.WorkloadError, match=r"bad: ''"):
        workload_cmd.parse_target("a,")


@pytest.mark.parametrize("source, message", [
    ("def setup(ctx)\n    pass\n", r"app\.py:1: expected ':'"),
    ("x = 1\n", r"app\.py: a workload module defines setup\(ctx\)"),
    ("def setup(ctx):\n    pass\n" + "# padding\n" * 450, r"the source is 4,\d{3} B, over the flash budget of 4,096 B"),
])
def test_deploy_refuses_before_it_connects(tmp_path, source, message):
    app = tmp_path / "app.py"
    app.write_text(source)
    run = workload_cmd.deploy(None, None, app, "echo", ["k1"], None, {}, 4096, None, "6.3")
    with pytest.raises(workload_cmd.WorkloadError, match=message):
        asyncio.run(run)


def test_cli_errors_are_one_line_with_exit_code_2(tmp_path):
    app = tmp_path / "app.py"
    app.write_text("def setup(ctx):\n    pass\n")

    def cli(*args):
        r = subprocess.run([sys.executable, "-m", "host.tools.cli", "workload", "-s", "nats://127.0.0.1:1", *args],
                           capture_output=True, text=True, cwd=REPO, timeout=60)
        return r.returncode, r.stderr

    assert cli("deploy", str(app), "--name", "bad name", "--target", "k1") == (
        2, "natsedge workload deploy: error: --name 'bad name': use 1-32 of A-Z, a-z, 0-9, '-' and '_'\n")
    assert cli("deploy", str(app), "--name", "n", "--target", "k1", "--max-ms", "0") == (
        2, "natsedge workload deploy: error: --max-ms: expected a number > 0, got 0\n")
    assert cli("host", "--tags", "ok,two words") == (
        2, 'natsedge workload host: error: config: "tags[1]": expected a tag (1-32 of A-Z, a-z, 0-9, - and _), got '
           '"two words"\n')
    code, err = cli("ls")
    assert code == 2 and err.startswith("natsedge workload ls: error: cannot connect to nats://127.0.0.1:1: ")
    assert err.count("\n") == 1


def test_a_device_without_the_package_says_which_bundle_it_needs(tmp_path):
    # as on a board whose bundle was built without --with workloads: the package cannot be imported
    cfg = tmp_path / "c.json"
    cfg.write_text('{"name": "k1", "workloads": {}}')
    code = ("import sys; sys.modules['edge.workloads.config'] = None; from edge.leaf.config import prepare; "
            f"print(prepare([{str(cfg)!r}]))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=30)
    assert r.stdout.strip() == ('config: "workloads" needs the edge.workloads package, which this device lacks '
                                '(natsedge firmware bundle --with workloads)'), r.stderr

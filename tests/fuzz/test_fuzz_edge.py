"""Fuzzing the edge code on CPython: the CBOR codec (edge/kvcache/cborcodec.py), the flash-log reader and recovery
(edge/flashlog.py), the KV store's recovery (edge/kvcache/store.py), the JSON config (edge/leaf/config.py with its
sections, edge/leaf/fwdconfig.py and edge/kvcache/config.py). The targets and their properties are in
tests/fuzz/edge_targets.py; the same targets run on the MicroPython unix port in tests/fuzz/test_fuzz_mp.py.

Here also: the codec writes the bytes cbor2 writes and reads cbor2's bytes back to the same value.
"""

import json

import cbor2
import pytest

from edge.kvcache import cborcodec
from tests.fuzz import edge_targets
from tests.fuzz.fuzzcore import FuzzFailure, Rng, byte_inputs, run
from tests.fuzz.harness import RUNS, CpuWatchdog
from tests.fuzz.seeds import all_cbor_seeds, edge_config_seeds

# inputs per run: (CI, slow)
BUDGET = {"cbor_decode": (50_000, 500_000), "cbor_roundtrip": (10_000, 200_000), "flashlog": (2000, 50_000),
          "kv_recovery": (1500, 40_000), "edge_config": (10_000, 200_000), "edge_config_file": (5000, 100_000)}


@pytest.mark.parametrize("budget", RUNS)
def test_fuzz_cbor_decode(fuzz, budget):
    gen, target, allowed = edge_targets.make_cbor_decode(all_cbor_seeds())
    counts = fuzz("cbor_decode", gen, target, allowed, BUDGET["cbor_decode"][budget])
    assert counts["ok"] and counts.get("CBORError"), counts


@pytest.mark.parametrize("budget", RUNS)
def test_fuzz_cbor_roundtrip_and_cbor2_agree(fuzz, budget):
    gen, roundtrip, allowed = edge_targets.make_cbor_roundtrip()

    def target(v):
        roundtrip(v)
        data = cborcodec.dumps(v)
        assert data == cbor2.dumps(v), f"other bytes than cbor2's: {cbor2.dumps(v).hex()}"
        assert edge_targets.same(cborcodec.loads(cbor2.dumps(v, canonical=True)), v), "cbor2's canonical form"

    counts = fuzz("cbor_roundtrip", gen, target, allowed, BUDGET["cbor_roundtrip"][budget])
    assert counts["ok"] and counts.get("CBORError"), counts  # values too deep were generated and refused


@pytest.mark.parametrize("budget", RUNS)
def test_fuzz_flashlog_damage_and_recovery(fuzz, budget, tmp_path):
    gen, target, allowed = edge_targets.make_flashlog(str(tmp_path))
    counts = fuzz("flashlog", gen, target, allowed, BUDGET["flashlog"][budget])
    assert counts["ok"] == BUDGET["flashlog"][budget], counts  # damage is recovered from, never an error


@pytest.mark.parametrize("budget", RUNS)
def test_fuzz_kv_store_recovery(fuzz, budget, tmp_path):
    gen, target, allowed = edge_targets.make_kv_recovery(str(tmp_path))
    counts = fuzz("kv_recovery", gen, target, allowed, BUDGET["kv_recovery"][budget])
    assert counts["ok"] == BUDGET["kv_recovery"][budget], counts


@pytest.mark.parametrize("budget", RUNS)
def test_fuzz_edge_config(fuzz, budget):
    gen, target, allowed = edge_targets.make_edge_config_tree(edge_config_seeds())
    counts = fuzz("edge_config", gen, target, allowed, BUDGET["edge_config"][budget])
    assert counts["ok"] and counts.get("ConfigError"), counts


@pytest.mark.parametrize("budget", RUNS)
def test_fuzz_edge_config_file(fuzz, budget, tmp_path):
    seeds = [json.dumps(t, indent=1).encode() for t in edge_config_seeds()]
    gen, target, allowed = edge_targets.make_edge_config_file(str(tmp_path), seeds)
    counts = fuzz("edge_config_file", gen, target, allowed, BUDGET["edge_config_file"][budget])
    assert counts["ok"] and counts.get("ConfigError"), counts


def test_watchdog_fails_a_hanging_input_and_names_it():
    def target(data):
        while data == b"3":  # input 3 never returns
            pass

    with CpuWatchdog(0.2) as dog:
        with pytest.raises(FuzzFailure, match=r"^spin input 3: no result within the per-input time bound \(hang\); "
                                              r"input hex:33$"):
            run("spin", target, counter(), (), 10, 1, dog)


def counter():
    state = [0]

    def gen(rng):
        state[0] += 1
        return b"%d" % (state[0] - 1)

    return gen


def test_byte_inputs_are_the_same_for_the_same_seed():
    # rule 1 of fuzzcore: a run is a function of its seed (what makes a CI failure reproduce)
    gen = byte_inputs([b"PUB a 1\r\nx\r\n", b"PING\r\n"], (b" ",))
    a, b = Rng(7), Rng(7)
    assert [gen(a) for _ in range(200)] == [gen(b) for _ in range(200)]

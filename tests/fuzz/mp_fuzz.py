"""Runs one edge fuzz target on the MicroPython unix port (or CPython), for tests/fuzz/test_fuzz_mp.py:

    MICROPYPATH=<repo> micropython -X heapsize=8M tests/fuzz/mp_fuzz.py TARGET SEED N SEEDS.json WORKDIR

TARGET: cbor_decode, cbor_roundtrip, flashlog, kv_recovery or edge_config (tests/fuzz/edge_targets.py). SEEDS.json
holds the seeds the parent gathered ({"cbor": [hex, ...], "edge_config": [config, ...]}); the flash-log and KV seeds
are written here, by the log and the store themselves. Prints `@I` before input I (the parent's watchdog: an input
with no line after it hung), then `DONE N {counts}`, or `FAIL <target> input I: <why>; input <input>` and exits 1.
"""

import binascii
import json
import sys


def _target(name, seeds, work):
    from tests.fuzz import edge_targets
    if name == "cbor_decode":
        return edge_targets.make_cbor_decode([binascii.unhexlify(h) for h in seeds["cbor"]])
    if name == "cbor_roundtrip":
        return edge_targets.make_cbor_roundtrip()
    if name == "flashlog":
        return edge_targets.make_flashlog(work)
    if name == "kv_recovery":
        return edge_targets.make_kv_recovery(work)
    if name == "edge_config":
        return edge_targets.make_edge_config_tree(seeds["edge_config"])
    raise ValueError("unknown target " + name)


class Heartbeat:
    def start(self, index, data):
        sys.stdout.write(f"@{index}\n")

    def stop(self):
        pass


def main(argv):
    from tests.fuzz.fuzzcore import FuzzFailure, run

    name, seed, n, seeds_path, work = argv[1], int(argv[2]), int(argv[3]), argv[4], argv[5]
    with open(seeds_path) as f:
        seeds = json.load(f)
    gen, target, allowed = _target(name, seeds, work)
    try:
        counts = run(name, target, gen, allowed, n, seed, Heartbeat())
    except FuzzFailure as e:
        sys.stdout.write(f"FAIL {e}\n")
        return 1
    sys.stdout.write(f"DONE {n} {json.dumps(counts)}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

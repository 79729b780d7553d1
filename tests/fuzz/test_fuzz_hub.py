"""Fuzzing the hub: its protocol parser (host/parser.py, every kind of peer: client, leaf and route frames) and its
config loader (host/conf.py + host/opts.py load_config), with tests/fuzz/fuzzcore.py's mutation engine on seeds from
the protocol captures and from the configs in tests and docs.

Properties:
- parser: any bytes give events or RemoteProtocolError (one line, with nats-server's -ERR text), never another
  exception or a hang; next_batch() on the input cut at random split points gives exactly the events and the error
  of next_event() on the whole input (split points do not change the frames).
- config loader: any file gives Options or one OptionsError line.
The CI runs are seeded (FUZZ_SEED, default 1); the slow run is the long one (docs/security.md, Fuzzing).
"""

import pytest

from edge.proto import KIND_CLIENT, KIND_LEAF, KIND_ROUTE, KIND_SERVER, RemoteProtocolError
from host.opts import OptionsError, load_config
from tests.fuzz.fuzzcore import mutate
from tests.fuzz.harness import RUNS
from tests.fuzz.seeds import conf_seeds, parser_seeds
from tests.unit.test_proto import _expand
from tests.unit.test_proto_fuzz import LIMITS, TOKENS, _chunks, _feed

KINDS = (KIND_CLIENT, KIND_SERVER, KIND_LEAF, KIND_ROUTE)
# inputs per run: CI (all hub targets together a few seconds of CPU), slow (the long run)
BUDGET = {"parser": (20_000, 500_000), "conf": (10_000, 300_000)}
CONF_TOKENS = (b"{", b"}", b"[", b"]", b"=", b":", b",", b";", b"\n", b"#", b"//", b'"', b"'", b"$", b"$X",
               b"include ", b"(\n", b"\n)\n", b"\\x", b"\\u", b"64MB", b"1kbb", b"-", b"2s", b"true", b"\x00", b"\xff",
               b"accounts", b"users", b"authorization", b"permissions", b"leafnodes", b"cluster", b"jetstream",
               b"tls", b"routes", b"remotes", b"max_payload", b"port", b"listen", b"2024-01-01T00:00:00Z")


def parser_inputs():
    seeds = parser_seeds()
    datas = [d for _k, d in seeds]

    def gen(rng):
        kind, data = rng.choice(seeds)
        if not rng.chance(16):
            data = mutate(rng, data, datas, TOKENS)
        if rng.chance(4):
            kind = rng.choice(KINDS)
        cuts = [rng.below(len(data) + 1) for _ in range(1 + rng.below(4))]
        return kind, rng.below(len(LIMITS)), cuts, data

    return gen


def parse_at_split_points(case):
    kind, limits, cuts, data = case
    limits = LIMITS[limits]
    evs, err = _feed(kind, limits, [data], False)
    bevs, berr = _feed(kind, limits, _chunks(data, cuts), True)
    assert _expand(bevs, kind) == evs, f"next_batch() at split points {sorted(cuts)} gives other frames"
    sevs, serr = _feed(kind, limits, _chunks(data, cuts), False)
    assert sevs == evs, f"next_event() at split points {sorted(cuts)} gives other frames"
    for other in (berr, serr):
        assert (other is None) == (err is None) and (err is None or other.wire == err.wire), (err, berr, serr)
    if err is not None:
        raise err


@pytest.mark.parametrize("budget", RUNS)
def test_fuzz_parser(fuzz, budget):
    counts = fuzz("parser", parser_inputs(), parse_at_split_points, (RemoteProtocolError,), BUDGET["parser"][budget])
    assert counts["ok"] and counts.get("RemoteProtocolError"), counts  # both paths were reached


def conf_target(folder):
    path = folder / "fuzz.conf"

    def target(data):
        path.write_bytes(data)
        load_config(str(path))

    return target


@pytest.mark.parametrize("budget", RUNS)
def test_fuzz_config_loader(fuzz, budget, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # relative paths a mutated config names (includes, store_dir) stay in here
    seeds = conf_seeds()

    def gen(rng):
        data = rng.choice(seeds)
        return data if rng.chance(16) else mutate(rng, data, seeds, CONF_TOKENS)

    counts = fuzz("conf", gen, conf_target(tmp_path), (OptionsError,), BUDGET["conf"][budget])
    assert counts["ok"] and counts.get("OptionsError"), counts

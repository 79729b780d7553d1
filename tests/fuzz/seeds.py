"""Seed inputs from real inputs (CPython): the protocol captures in tests/vectors, the configs in the tests and docs,
the edge's JSON configs, CBOR the codec and cbor2 write. Flash-log seeds are written by the log itself
(tests/fuzz/edge_targets.py build_logs).
"""

import ast
import json
import re
from pathlib import Path

import cbor2

from tests.fuzz.edge_targets import cbor_seeds
from tests.unit.test_proto import _vectors

REPO = Path(__file__).resolve().parents[2]
# Python files whose string constants include hub configs (the ones that parse are kept).
CONF_TEST_FILES = ("tests/unit/test_conf.py", "tests/unit/test_cluster_opts.py", "tests/unit/test_jetstream_config.py",
                   "tests/hub/test_mappings.py")
_HEREDOC = re.compile(r"<<'?(\w+)'?\n(.*?)\n\1\n", re.S)
_JSON_BLOCK = re.compile(r"```json\n(.*?)\n```", re.S)


def parser_seeds() -> list[tuple[int, bytes]]:
    # (kind of the peer that sent it, what it sent) for every direction of every capture
    return [(s.kind, s.data) for t in _vectors() for s in t.streams if s.data]


def conf_seeds() -> list[bytes]:
    from host.conf import ConfError, parse

    out = [p.read_bytes() for p in sorted((REPO / "tests" / "vectors" / "configs").glob("*.conf"))]
    texts = []
    for name in CONF_TEST_FILES:
        tree = ast.parse((REPO / name).read_text(encoding="utf-8"))
        texts += [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)]
    for md in sorted((REPO / "docs").glob("*.md")) + [REPO / "README.md"]:
        texts += [m.group(2) for m in _HEREDOC.finditer(md.read_text(encoding="utf-8"))]
    for text in texts:
        if len(text) < 8 or not any(c in text for c in ":={"):
            continue
        try:
            parse(text, env={})
        except (ConfError, OSError):
            continue
        out.append(text.encode())
    return out


def edge_config_seeds() -> list[dict]:
    from edge.leaf.confcheck import ConfigError
    from edge.leaf.config import check

    texts = [(REPO / "boards" / "esp32" / "site.example.json").read_text(encoding="utf-8")]
    for md in sorted((REPO / "docs").glob("*.md")) + [REPO / "README.md"] + sorted(REPO.glob("edge/*/README.md")):
        texts += _JSON_BLOCK.findall(md.read_text(encoding="utf-8"))
    out = []
    for text in texts:
        if text.lstrip().startswith('"'):
            text = '{"name": "e1", ' + text + "}"  # a section shown alone, as docs/kvcache.md does
        try:
            tree = json.loads(text)
            check(tree)
        except (ValueError, ConfigError):
            continue  # a status document or a fragment, not a config
        out.append(tree)
    return out


def all_cbor_seeds() -> list[bytes]:
    # The codec's own bytes, and cbor2's for the same values in its smallest (canonical) form: half and single
    # floats, sorted maps.
    own = cbor_seeds()
    from edge.kvcache import cborcodec

    return own + [cbor2.dumps(cborcodec.loads(b), canonical=True) for b in own[:32]]

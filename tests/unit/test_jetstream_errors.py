"""host/jetstream/errors.py: the one table of JetStream API errors, and every use of it naming a real entry."""

from __future__ import annotations

import ast
import pathlib

import pytest

from host.jetstream.errors import JS_API_ERRORS, ApiError, js_error

PACKAGE = pathlib.Path(__file__).resolve().parents[2] / "host" / "jetstream"


def _uses() -> list[tuple[str, int, str, set[str]]]:
    out = []
    for path in sorted(PACKAGE.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "js_error":
                first = node.args[0]
                assert isinstance(first, ast.Constant), f"{path.name}:{node.lineno}: js_error needs a literal name"
                out.append((path.name, node.lineno, first.value, {k.arg for k in node.keywords if k.arg}))
    return out


@pytest.mark.parametrize("where, line, constant, args", _uses())
def test_every_use_names_an_entry_and_fills_its_placeholders(where, line, constant, args):
    assert constant in JS_API_ERRORS, f"{where}:{line}"
    description = JS_API_ERRORS[constant][2]
    assert {a for a in args if "{" + a + "}" in description} == args, f"{where}:{line}"
    assert "{" not in js_error(constant, **{a: "x" for a in args}).description, f"{where}:{line}"


def test_error_codes_are_unique():
    codes = [err_code for _, err_code, _ in JS_API_ERRORS.values()]
    assert len(codes) == len(set(codes))


def test_placeholders_are_replaced_as_nats_server_does():
    e = js_error("JSSequenceNotFoundErrF", seq=42)
    assert isinstance(e, ApiError)
    assert e.body() == {"code": 400, "err_code": 10043, "description": "sequence 42 not found"}
    assert js_error("JSInvalidJSONErr", err="x").description == "invalid JSON: x"

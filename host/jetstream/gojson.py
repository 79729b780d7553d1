"""JSON as nats-server's Go code reads and writes it: compact output with Go's escapes, and request decoding with
encoding/json's strictness and error texts.

nats-server decodes API bodies into Go structs with DisallowUnknownFields (JetStream "strict" mode, the default):
an unknown key, a value of the wrong JSON type or a number out of range is a 10025 "invalid JSON" error carrying
encoding/json's text; a bad enum string fails in the type's own UnmarshalJSON. A schema maps each key to a kind:
"string", "bool", "int", "int32", "int64", "uint64", "duration" (time.Duration), "durations" ([]time.Duration),
"time" (time.Time), "strings", "map" (map[string]string), "any", an `Enum`, a nested `Struct`, a `StructList`, or
a `Promoted` kind (a field of an embedded struct).

Rules: 1. This is the only JSON decoder of the API: every request body goes through `decode_request` (or `loads` +
`decode` where the answer is not an API error). 2. Like Go, decoding keeps the first type error and goes on, while
an UnmarshalJSON error (enums, times) or a syntax error stops at once.
"""

from __future__ import annotations

import json
from typing import Any

from host.gotime import parse_time
from host.jetstream.errors import js_error

_UINT64_MAX = (1 << 64) - 1


class Promoted:
    """A field promoted from an embedded Go struct (JSApiConsumerGetNextRequest's inline PriorityGroup):
    encoding/json's type errors name no struct for it (`Go struct field .group of type string`)."""

    __slots__ = ("kind",)

    def __init__(self, kind: Any) -> None:
        self.kind = kind


class GoJSONError(ValueError):
    """A body Go's encoding/json would refuse; the message is Go's."""


class Enum:
    """A Go string enum with its own UnmarshalJSON: the strings it accepts (in any letter case when `any_case`),
    and the text it fails with (`unknown` + the raw JSON, else Go's usual `can not unmarshal "<raw>"`)."""

    __slots__ = ("values", "any_case", "unknown")

    def __init__(self, *values: str, any_case: bool = False, unknown: str = "") -> None:
        self.values = values
        self.any_case = any_case
        self.unknown = unknown


class Struct:
    """A nested Go struct: its type name as Go writes it in errors (`server.StreamConsumerLimits`) and its fields."""

    __slots__ = ("go_type", "fields")

    def __init__(self, go_type: str, fields: dict[str, Any]) -> None:
        self.go_type = go_type
        self.fields = fields


class StructList:
    """A Go slice of structs (`[]*server.StreamSource`): each item decoded as `item`, JSON null items dropped."""

    __slots__ = ("item",)

    def __init__(self, item: Struct) -> None:
        self.item = item


_INT_RANGES = {
    "int": (-(1 << 63), (1 << 63) - 1, "int"),
    "int32": (-(1 << 31), (1 << 31) - 1, "int32"),
    "int64": (-(1 << 63), (1 << 63) - 1, "int64"),
    "uint64": (0, _UINT64_MAX, "uint64"),
    "duration": (-(1 << 63), (1 << 63) - 1, "time.Duration"),
}
_SKIP = object()


# ---- encoding ----------------------------------------------------------------------------------------------------

_GO_ESCAPES = str.maketrans({"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028",
                             "\u2029": "\\u2029"})


def dumps(obj: Any) -> bytes:
    """Compact JSON as Go's encoding/json writes it: UTF-8 kept, `<`, `>`, `&` escaped (those can only occur
    inside strings, so the whole text can be translated)."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).translate(_GO_ESCAPES).encode()


# ---- syntax ------------------------------------------------------------------------------------------------------


class _Literal(float):
    """A JSON number with a fraction or exponent, remembering how it was written (Go quotes the literal)."""

    literal: str

    def __new__(cls, text: str) -> _Literal:
        obj = super().__new__(cls, text)
        obj.literal = text
        return obj


def loads(payload: bytes) -> Any:
    """The body as JSON (None when empty), or GoJSONError with encoding/json's syntax error text."""
    text = payload.strip()
    if not text:
        return None
    try:
        return json.loads(text, parse_float=_Literal)
    except UnicodeDecodeError:
        raise GoJSONError("invalid character in string literal") from None
    except json.JSONDecodeError as e:
        raise GoJSONError(_syntax_error(e)) from None
    except RecursionError:
        raise GoJSONError("exceeded max depth") from None


def _syntax_error(exc: json.JSONDecodeError) -> str:
    """encoding/json's syntax error text for a document Python could not parse (strict decoder: with offset)."""
    doc, pos = exc.doc, exc.pos
    if pos >= len(doc):
        return "unexpected end of JSON input"
    ch = doc[pos]
    shown = "'" + ch + "'" if ch != "'" else "'\\''"
    msg = exc.msg
    if msg.startswith("Expecting property name"):
        ctx = "looking for beginning of object key string"
    elif msg.startswith("Expecting ':'"):
        ctx = "after object key"
    elif msg.startswith("Expecting ','"):
        ctx = "after object key:value pair" if _inside_object(doc, pos) else "after array element"
    elif msg.startswith("Extra data"):
        ctx = "after top-level value"
    elif msg.startswith("Unterminated string"):
        return "unexpected end of JSON input"
    elif msg.startswith("Invalid control character"):
        return f"invalid character {shown} in string literal"
    else:
        ctx = "looking for beginning of value"
    return f"invalid character {shown} {ctx} at offset {pos + 1}"


def _inside_object(doc: str, pos: int) -> bool:
    depth = 0
    in_str = False
    i = pos - 1
    while i >= 0:
        c = doc[i]
        if c == '"' and (i == 0 or doc[i - 1] != "\\"):
            in_str = not in_str
        elif not in_str:
            if c in "]}":
                depth += 1
            elif c in "[{":
                if depth == 0:
                    return c == "{"
                depth -= 1
        i -= 1
    return False


def json_kind(v: Any) -> str:
    """The JSON type of a decoded value as encoding/json names it in errors."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, (int, float)):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    return "object"


# ---- typed decoding ----------------------------------------------------------------------------------------------


class _Decode:
    def __init__(self, type_name: str, strict: bool) -> None:
        self.type_name = type_name
        self.strict = strict
        self.first: str | None = None  # Go keeps the first type error and goes on decoding

    def save(self, msg: str) -> None:
        if self.first is None:
            self.first = msg

    def type_error(self, value: Any, path: str, go_type: str, literal: bool = False) -> None:
        """encoding/json's UnmarshalTypeError; a number is quoted only when it was meant for a number type."""
        what = json_kind(value)
        if literal and what == "number":
            what = f"number {value.literal if isinstance(value, _Literal) else json.dumps(value)}"
        self.save(f"json: cannot unmarshal {what} into Go struct field {self.type_name}.{path} of type {go_type}")

    def struct(self, obj: dict[str, Any], fields: dict[str, Any], prefix: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in obj.items():
            kind = fields.get(key)
            if kind is None:
                if self.strict:
                    self.save(f"json: unknown field {json.dumps(key)}")
                continue
            if value is None and not isinstance(kind, Enum):
                continue  # null leaves the Go zero value (an enum's UnmarshalJSON sees it, and refuses it)
            v = self.value(value, kind, prefix + key)
            if v is not _SKIP:
                out[key] = v
        return out

    def value(self, value: Any, kind: Any, path: str) -> Any:
        if isinstance(kind, Promoted):
            type_name, self.type_name = self.type_name, ""
            try:
                return self.value(value, kind.kind, path)
            finally:
                self.type_name = type_name
        if isinstance(kind, Enum):
            v = value.lower() if kind.any_case and isinstance(value, str) else value
            if not isinstance(v, str) or v not in kind.values:
                raw = json.dumps(value, separators=(",", ":"))
                raise GoJSONError(kind.unknown + raw if kind.unknown else f"can not unmarshal {json.dumps(raw)}")
            return v
        if isinstance(kind, Struct):
            if not isinstance(value, dict):
                self.type_error(value, path, kind.go_type)
                return _SKIP
            return self.struct(value, kind.fields, path + ".")
        if isinstance(kind, StructList):
            if not isinstance(value, list):
                self.type_error(value, path, "[]*" + kind.item.go_type)
                return _SKIP
            items = [self.value(item, kind.item, path) for item in value if item is not None]
            return [item for item in items if item is not _SKIP]
        if kind == "any":
            return value
        if kind == "time":
            try:
                return parse_time(value)
            except ValueError as e:
                raise GoJSONError(str(e)) from None
        if kind in _INT_RANGES:
            lo, hi, go_type = _INT_RANGES[kind]
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                self.type_error(value, path, go_type)
                return _SKIP
            # a literal with a fraction or an exponent, or out of range: Go refuses it for ints
            if isinstance(value, float) or not lo <= value <= hi:
                self.type_error(value, path, go_type, literal=True)
                return _SKIP
            return value
        if kind == "string":
            if not isinstance(value, str):
                self.type_error(value, path, "string")
                return _SKIP
            return value
        if kind == "bool":
            if not isinstance(value, bool):
                self.type_error(value, path, "bool")
                return _SKIP
            return value
        if kind in ("strings", "durations"):
            item_kind, go_type = ("string", "[]string") if kind == "strings" else ("duration", "[]time.Duration")
            if not isinstance(value, list):
                self.type_error(value, path, go_type)
                return _SKIP
            items = [self.value(item, item_kind, path) for item in value]
            return [item for item in items if item is not _SKIP]
        if kind == "map":
            if not isinstance(value, dict):
                self.type_error(value, path, "map[string]string")
                return _SKIP
            m = {}
            for k, v in value.items():
                if v is None:
                    m[k] = ""  # null into a map's string: the zero value
                elif not isinstance(v, str):
                    self.type_error(v, path, "string")
                else:
                    m[k] = v
            return m
        raise AssertionError(f"unknown schema kind {kind!r}")


def decode(obj: Any, fields: dict[str, Any], type_name: str, strict: bool = True) -> dict[str, Any]:
    """A decoded JSON value checked against `fields` as Go decodes it into the struct `server.<type_name>`: the
    keys it sets (None is an empty object). GoJSONError with encoding/json's text."""
    if obj is None:
        return {}
    if not isinstance(obj, dict):
        raise GoJSONError(f"json: cannot unmarshal {json_kind(obj)} into Go value of type server.{type_name}")
    d = _Decode(type_name, strict)
    out = d.struct(obj, fields, "")
    if d.first is not None:
        raise GoJSONError(d.first)
    return out


def decode_request(payload: bytes, fields: dict[str, Any], type_name: str, strict: bool = True) -> dict[str, Any]:
    """Decode an API body into the keys of `fields` (an empty body is an empty object); ApiError 10025 on bad
    JSON, wrong types and (strict, as the API decodes) unknown keys, with Go's wording."""
    try:
        return decode(loads(payload), fields, type_name, strict)
    except GoJSONError as e:
        raise js_error("JSInvalidJSONErr", err=str(e)) from None


# ---- request shapes ------------------------------------------------------------------------------------------------


def is_empty_request(payload: bytes) -> bool:
    """nats-server isEmptyRequest: nothing, `{}`, or any JSON object without keys."""
    if not payload or payload == b"{}":
        return True
    try:
        v = json.loads(payload)
    except (ValueError, RecursionError):
        return False
    return isinstance(v, dict) and not v


def check_empty_request(payload: bytes) -> None:
    """The answer of an API that takes no body to a request with one."""
    if not is_empty_request(payload):
        raise js_error("JSNotEmptyRequestErr")


def is_json_object_or_array(payload: bytes) -> bool:
    """nats-server isJSONObjectOrArray: the body starts (after whitespace) with `{` or `[`."""
    text = payload.lstrip()
    return bool(text) and text[:1] in (b"{", b"[")

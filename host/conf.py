# host/conf.py -- parser for nats-server's configuration file format.
#
# Owns: turning the text of a nats-server config file (plus the files it includes and the environment
# variables it references) into plain Python values, with the file and line each key came from.
# It knows nothing about what an option means: the hub's option handling reads the result.
#
# Reference behaviour: nats-server v2.15.1 (conf/lex.go and conf/parse.go), checked against the binary with
# `nats-server -c FILE -t` by tests/unit/test_conf.py.  This is an independent re-implementation: a
# recursive-descent parser instead of nats-server's lexer state machine.
"""Parse nats-server configuration files.

    >>> conf = parse("port: 4222\\nauthorization { user: a, password: $PW }", env={"PW": "s3cret"})
    >>> conf["authorization"]["password"], conf.pos("port")
    ('s3cret', ('<string>', 1))

Values are ``int`` (sizes such as ``64MB`` already multiplied out), ``float``, ``bool``, ``str``,
``datetime`` (nats-server's ISO-8601 Zulu form), ``list`` and :class:`ConfMap`.  Durations are not a
type of their own: ``"2s"`` and a bare ``2s`` stay strings for the caller to convert -- but note that a bare
``2m`` is the *integer* 2000000 in nats-server's syntax (``m`` is the "mega" size suffix).

Syntax quirks kept on purpose, because nats-server has them and configs are shared with it:

* a bare integer directly followed by ``]`` is a string (``[1]`` is an unclosed array holding ``"1]"``),
  while ``[1k]`` holds the string ``"1k"`` and ``[-1]`` and ``[1.5]`` hold numbers;
* a bare word stops at blanks and at ``, ; ] }`` but not at ``#``: ``port: 4222#x`` is the string
  ``"4222#x"``; a ``'`` ends a bare word and is dropped;
* ``key =`` at the end of the input, or ``key = }`` / ``key = ,`` at the top level, set ``""``;
* a top-level ``{ ... }`` wrapper (JSON style) is flattened into the top level, and may be left unclosed;
* variables are looked up in the enclosing maps of the *same file* only, then in the environment (an
  environment value is itself parsed as a config value); ``$2a$...`` (a bcrypt hash) is not a variable;
* an included file cannot see the including file's variables, but the keys it defines are merged into
  the map that contains the ``include`` and become visible to what follows;
* an include path is joined to the including file's folder even when it starts with ``/`` (Go's
  ``filepath.Join``).

Where nats-server accepts a broken text and silently loses data, this parser raises :class:`ConfError`
instead: a map key without a value (``{ a }``), an unknown size suffix (``1kbb``), an unterminated quoted
string inside an array, a NUL character, ``\\x`` escapes that are not UTF-8, an integer that overflows
64 bits once the size suffix is applied, and include cycles (nats-server recurses until it crashes).
"""

from __future__ import annotations

import copy
import math
import os
import re
from bisect import bisect_right
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, TypeAlias

__all__ = ["ConfError", "ConfMap", "Value", "parse", "parse_file"]

Value: TypeAlias = "int | float | bool | str | datetime | list[Value] | ConfMap"

# peek() returns this past the end of the text.  NUL is rejected up front, so it cannot be real input, and
# unlike "" it never matches `c in "..."` by accident.
_EOF = "\x00"

# Go's unicode.IsSpace: separates keys from values, and is skipped between entries.
_SPACE = frozenset("\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008"
                   "\u2009\u200a\u2028\u2029\u202f\u205f\u3000")
_BLANK = " \t"        # the only blanks nats-server allows between a value and what ends it
_NL = "\n\r"          # both end a line for the lexer (lines are still counted by "\n" only)
_SEPARATORS = "=:"
_BARE_STOP = "\n\r;,]} \t" + _EOF      # characters that end a bare word (not consumed)
_INT_STOP = "\n\r;,} \t" + _EOF        # ... and an integer: no "]", hence `[1]` -> "1]" (see docstring)
_INCLUDE_STOP = "\n\r;} \t" + _EOF     # ... and an unquoted include path: no "," nor "]"

_BOOLS = {"true": True, "yes": True, "on": True, "false": False, "no": False, "off": False}

# Size suffixes: a bare letter is a power of 1000, with "b", "i" or "ib" a power of 1024 (1k = 1000,
# 1kb = 1KiB = 1024).  nats-server lowercases the suffix before looking it up.
_SIZE_LETTERS = "kKmMgGtTpPeE"
_SIZE_MULT = {"": 1}
for _power, _letter in enumerate("kmgtpe", start=1):
    _SIZE_MULT[_letter] = 1000**_power
    for _tail in ("b", "i", "ib"):
        _SIZE_MULT[_letter + _tail] = 1024**_power

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_DATE_TAIL = "00-00T00:00:00Z"   # what must follow "YYYY-" in a datetime; "0" stands for any digit
_HEX2 = re.compile(r"[0-9a-fA-F]{2}")
_ASCII_INT = re.compile(r"-?[0-9]+")
_ASCII_FLOAT = re.compile(r"-?[0-9]+\.[0-9]+")
_TO_EOL = re.compile(r"[^\n\r]*")

# Maps, arrays, includes and environment variables nested deeper than this are refused, so that no input
# can exhaust Python's recursion limit (real configs nest a handful of levels).
_MAX_DEPTH = 100


class ConfError(ValueError):
    """A config text that cannot be parsed; str() reads ``file:line:col: message``."""

    def __init__(self, msg: str, filename: str = "<string>", line: int | None = None,
                 col: int | None = None) -> None:
        self.msg = msg
        self.filename = filename
        self.line = line
        self.col = col
        super().__init__(str(self))

    def __str__(self) -> str:
        where = self.filename
        if self.line is not None:
            where += f":{self.line}"
            if self.col is not None:
                where += f":{self.col}"
        return f"{where}: {self.msg}"

    def __reduce__(self) -> tuple[Any, ...]:
        return (ConfError, (self.msg, self.filename, self.line, self.col))


class ConfMap(dict):
    """A config map: a dict that also remembers where each key was defined.

    Keys keep their spelling from the file; nats-server matches option names case-insensitively, so
    :meth:`get_ci` is provided for lookups.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._pos: dict[str, tuple[str, int]] = {}
        self._used: set[str] = set()

    def pos(self, key: str) -> tuple[str, int]:
        """(filename, line) where ``key`` was (last) defined; KeyError if it was not parsed."""
        return self._pos[key]

    def get_ci(self, key: str, default: Any = None) -> Any:
        """Case-insensitive get.  The exact spelling wins; otherwise the first key, in definition order,
        that matches ignoring case (nats-server itself picks one at random if several do)."""
        if key in self:
            return self[key]
        folded = key.lower()
        for k, v in self.items():
            if k.lower() == folded:
                return v
        return default

    def used_as_variable(self, key: str) -> bool:
        """True when ``$key`` was referenced; nats-server does not report such keys as unknown options."""
        return key in self._used

    def _define(self, key: str, value: Value, where: tuple[str, int]) -> None:
        self[key] = value
        self._pos[key] = where


def parse(text: str, filename: str = "<string>", base_dir: str | None = None,
          env: Mapping[str, str] | None = None) -> ConfMap:
    """Parse config ``text``.  ``filename`` is used in errors and :meth:`ConfMap.pos`; includes are
    resolved against ``base_dir`` (default: the folder of ``filename``, or the current folder); ``$VAR``
    falls back to ``env`` (default: ``os.environ``)."""
    if base_dir is None:
        base_dir = os.path.dirname(filename) if filename != "<string>" else "."
    return _Parser(text, filename, base_dir or ".", os.environ if env is None else env).document()


def parse_file(path: str, env: Mapping[str, str] | None = None) -> ConfMap:
    """Read and parse the config file at ``path`` (and whatever it includes)."""
    try:
        data = _read(path)
        chain = (os.path.realpath(path),)
    except (OSError, ValueError) as e:
        raise ConfError(f"cannot read config file: {_reason(e)}", path) from None
    text = _decode(data, path)
    parser = _Parser(text, path, os.path.dirname(path) or ".", os.environ if env is None else env,
                     includes=chain)
    return parser.document()


# --------------------------------------------------------------------------------------------------------
# implementation


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _reason(e: BaseException) -> str:
    return e.strerror if isinstance(e, OSError) and e.strerror else str(e)


def _decode(data: bytes, filename: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise ConfError(f"not valid UTF-8 (byte offset {e.start})", filename, line) from None


def _go_join(base_dir: str, rel: str) -> str:
    # Go's filepath.Join: the include path is always appended to the folder, even when it starts with "/".
    return os.path.normpath(base_dir + os.sep + rel)


def _show(c: str) -> str:
    if c == _EOF:
        return "end of input"
    if c in _NL:
        return "end of line"
    return repr(c)


def _is_include(key: str) -> bool:
    # Go lowercases rune by rune ("İ" becomes "i"); Python's full case mapping would make it "i̇".
    return key.replace("\u0130", "i").lower() == "include"


class _Parser:
    """Parses one text: a config file, an included file, or the value of an environment variable.

    Each gets its own parser, hence its own variable scopes, as in nats-server.
    """

    def __init__(self, text: str, filename: str, base_dir: str, env: Mapping[str, str],
                 includes: tuple[str, ...] = (), env_refs: set[str] | None = None, depth: int = 0) -> None:
        self.text = text
        self.i = 0
        self.filename = filename
        self.base_dir = base_dir
        self.env = env
        self.includes = includes                  # real paths of the files being parsed, outermost first
        self.env_refs = set() if env_refs is None else env_refs   # environment variables being expanded
        self.depth = depth
        self.scopes: list[ConfMap] = []           # the maps being built, innermost last
        self._line_starts = [0] + [m.end() for m in re.finditer("\n", text)]

    # ---- small helpers

    def peek(self, ahead: int = 0) -> str:
        j = self.i + ahead
        return self.text[j] if j < len(self.text) else _EOF

    def loc(self, at: int) -> tuple[int, int]:
        line = bisect_right(self._line_starts, at)
        return line, at - self._line_starts[line - 1] + 1

    def line_of(self, at: int) -> int:
        return bisect_right(self._line_starts, at)

    def error(self, msg: str, at: int | None = None) -> ConfError:
        line, col = self.loc(self.i if at is None else at)
        return ConfError(msg, self.filename, line, col)

    def skip(self, chars: str | frozenset[str]) -> None:
        while self.peek() in chars:         # never true at the end: _EOF is in no character set
            self.i += 1

    def at_comment(self) -> bool:
        return self.peek() == "#" or self.text.startswith("//", self.i)

    def skip_comment(self) -> None:
        # A comment runs up to, not including, the end of the line.
        self.i = _TO_EOL.match(self.text, self.i).end()

    def enter(self, at: int) -> None:
        self.depth += 1
        if self.depth > _MAX_DEPTH:
            raise self.error(f"nested more than {_MAX_DEPTH} levels deep", at)

    def leave(self) -> None:
        self.depth -= 1

    # ---- the top level

    def document(self) -> ConfMap:
        nul = self.text.find(_EOF)
        if nul >= 0:
            raise self.error("NUL character in config", nul)
        top = ConfMap()
        self.scopes.append(top)
        # nats-server accepts a JSON-style "{ ... }" around the top level; the braces open no map.
        braces: list[int] = []
        state = "key"        # "key": expecting an entry; "value": after one; "brace": after a closing '}'
        while True:
            c = self.peek()
            if state == "key":
                if c in _SPACE:
                    self.i += 1
                elif c == _EOF:
                    return top          # unclosed "{" wrappers are accepted too
                elif self.at_comment():
                    self.skip_comment()
                elif c == "/":
                    raise self.error("unexpected '/' (comments start with '#' or '//')")
                elif c == "{":
                    braces.append(self.i)
                    self.i += 1
                elif c == "}" and braces:
                    self.i += 1
                    braces.pop()
                    state = "brace" if braces else "key"
                elif self.top_entry(top):
                    state = "value"
                else:
                    return top
            elif state == "value":
                if self.at_comment():
                    self.skip_comment()
                    if not braces:
                        state = "key"
                elif c in _BLANK or c == "/":   # nats-server skips a stray '/' here like a blank
                    self.i += 1
                elif c in "\n\r;,":
                    self.i += 1
                    state = "key"
                elif c == "}":
                    self.i += 1
                    if braces:
                        braces.pop()
                        state = "brace" if braces else "key"
                    else:
                        state = "key"           # a '}' after a top-level value ends it like a new line
                elif c == _EOF and not braces:
                    return top
                else:
                    raise self.unexpected_after_value(c, braces)
            else:   # "brace": only more closing braces, separators or comments may follow
                if self.at_comment():
                    self.skip_comment()
                    state = "key"
                elif c in _BLANK or c in _NL or c == "/":
                    self.i += 1
                elif c in ";,":
                    self.i += 1
                    state = "key"
                elif c == "}":
                    self.i += 1
                    braces.pop()
                    state = "brace" if braces else "key"
                else:
                    raise self.unexpected_after_value(c, braces)

    def unexpected_after_value(self, c: str, braces: list[int]) -> ConfError:
        if c == _EOF:
            opened = self.line_of(braces[-1])
            return self.error(f"expected '}}' to close the '{{' opened at line {opened}")
        expected = "a new line, ',' or ';'" + (" or '}'" if braces else "")
        return self.error(f"expected {expected} after a value, found {_show(c)}")

    def top_entry(self, m: ConfMap) -> bool:
        """One `key value` at the top level; False when the input turns out to end instead."""
        key_at = self.i
        c = self.peek()
        if c in _SEPARATORS:
            raise self.error(f"unexpected {c!r}: a key must come first")
        if c in "\"'":
            if self.i + 1 == len(self.text):
                return False    # nats-server ignores a lone quote at the very end of the input
            key = self.quoted_key()
        else:
            key = self.bare_key()
            if self.peek() in _SPACE and _is_include(key):
                self.include(m)
                return True
        # Blank lines may separate a top-level key from its separator or value.
        self.skip(_SPACE)
        c = self.peek()
        if c == _EOF:
            if key == "}":
                return False    # a closing brace without an opening one ends JSON-style input
            raise self.error(f"key {key!r} has no value", key_at)
        if c in _SEPARATORS:
            self.i += 1
        m._define(key, self.value(), (self.filename, self.line_of(key_at)))
        return True

    # ---- keys

    def quoted_key(self) -> str:
        quote, start = self.text[self.i], self.i
        end = self.text.find(quote, start + 1)
        if end < 0:
            raise self.error(f"unterminated quoted key: missing closing {quote}", start)
        self.i = end + 1
        return self.text[start + 1:end]

    def bare_key(self) -> str:
        # The first character always belongs to the key, whatever it is; the key runs up to a space, a
        # separator or the end of the input.
        start = self.i
        self.i += 1
        while (c := self.peek()) not in _SPACE and c not in _SEPARATORS and c != _EOF:
            self.i += 1
        return self.text[start:self.i]

    # ---- include

    def include(self, m: ConfMap) -> None:
        """`include PATH`: parse the file and merge its top-level keys into ``m``."""
        self.skip(_BLANK)
        at = self.i
        c = self.peek()
        if c in "\"'":
            end = self.text.find(c, at + 1)
            if end < 0:
                raise self.error(f"unterminated include path: missing closing {c}", at)
            rel = self.text[at + 1:end]
            self.i = end + 1
        elif c in "[{(\\" + _NL + _EOF or c == "-" or c.isdecimal():
            raise self.error(f"include needs a file name, found {_show(c)}", at)
        else:
            while self.peek() not in _INCLUDE_STOP and self.peek() != "'":
                self.i += 1
            rel = self.text[at:self.i]
            if self.peek() == "'":
                self.i += 1
        if self.depth >= _MAX_DEPTH:
            raise self.error(f"includes nested more than {_MAX_DEPTH} levels deep", at)

        path = _go_join(self.base_dir, rel)
        try:
            real = os.path.realpath(path)
        except (OSError, ValueError) as e:
            raise self.error(f"cannot read include file {rel!r} ({path}): {_reason(e)}", at) from None
        if real in self.includes:
            cycle = " -> ".join((*self.includes[self.includes.index(real):], real))
            raise self.error(f"include cycle: {cycle}", at)
        try:
            data = _read(path)
        except (OSError, ValueError) as e:
            raise self.error(f"cannot read include file {rel!r} ({path}): {_reason(e)}", at) from None
        sub = _Parser(_decode(data, path), path, os.path.dirname(path) or ".", self.env,
                      (*self.includes, real), self.env_refs, self.depth + 1)
        try:
            included = sub.document()
        except ConfError as e:
            note = f" (included from {self.filename}:{self.line_of(at)})"
            raise ConfError(e.msg + note, e.filename, e.line, e.col) from None
        for key, value in included.items():
            m._define(key, value, included.pos(key))
            if included.used_as_variable(key):
                m._used.add(key)

    # ---- values

    def value(self) -> Value:
        """A value, after a key and its separator, or in an array."""
        self.skip(_BLANK)
        c = self.peek()
        if c == "[":
            return self.array()
        if c == "{":
            return self.map()
        if c == "'":
            return self.single_quoted()
        if c == '"':
            return self.double_quoted()
        if c == "(":
            return self.block_string()
        if c == "-":
            return self.negative_number()
        if c.isdecimal():       # Go's unicode.IsDigit; the conversion to int later insists on ASCII
            return self.number()
        if c == ".":
            raise self.error("a number cannot start with '.'")
        if c in _NL:
            raise self.error("expected a value before the end of the line")
        return self.bare_word(self.i)

    def array(self) -> list[Value]:
        open_at = self.i
        self.i += 1
        self.enter(open_at)
        items: list[Value] = []
        want_value = True
        while True:
            c = self.peek()
            if c == _EOF:
                raise self.error(f"expected ']' to close the array opened at line {self.line_of(open_at)}")
            if want_value:
                if c in _SPACE:
                    self.i += 1
                elif self.at_comment():
                    self.skip_comment()
                elif c == "]":
                    break
                elif c in ",/":
                    raise self.error(f"unexpected {c!r} in array: expected a value")
                else:
                    items.append(self.value())
                    want_value = False
            else:
                if c in _BLANK:
                    self.i += 1
                elif self.at_comment():
                    self.skip_comment()
                elif c in ",/" or c in _NL:     # nats-server takes a stray '/' for a separator here
                    self.i += 1
                    want_value = True
                elif c == "]":
                    break
                else:
                    raise self.error(f"expected ',' or ']' after an array value, found {_show(c)}")
        self.i += 1
        self.leave()
        return items

    def map(self) -> ConfMap:
        open_at = self.i
        self.i += 1
        self.enter(open_at)
        m = ConfMap()
        self.scopes.append(m)
        want_key = True
        while True:
            c = self.peek()
            if c == _EOF:
                raise self.error(f"expected '}}' to close the map opened at line {self.line_of(open_at)}")
            if want_key:
                if c in _SPACE:
                    self.i += 1
                elif c == "}":
                    break
                elif self.at_comment():
                    self.skip_comment()
                elif c in _SEPARATORS or c == "]":
                    raise self.error(f"unexpected {c!r} in map: expected a key")
                else:
                    self.map_entry(m)
                    want_key = False
            else:
                if c in _BLANK:
                    self.i += 1
                elif self.at_comment():
                    self.skip_comment()
                elif c in ",;/" or c in _NL:    # a stray '/' separates entries here, as in nats-server
                    self.i += 1
                    want_key = True
                elif c == "}":
                    break
                else:
                    raise self.error(f"expected ',', ';', a new line or '}}' after a map value, "
                                     f"found {_show(c)}")
        self.i += 1
        self.scopes.pop()
        self.leave()
        return m

    def map_entry(self, m: ConfMap) -> None:
        key_at = self.i
        if self.peek() in "\"'":
            key = self.quoted_key()
        else:
            if self.peek() == "/":
                self.i += 1     # nats-server drops a stray '/' before a key in a map
                if self.peek() == _EOF:
                    return      # the caller reports the unclosed map
            key = self.bare_key()
            if self.peek() in _SPACE and _is_include(key):
                self.include(m)
                return
        # Inside a map, blank lines may separate the key, the separator and the value.
        self.skip(_SPACE)
        if self.peek() in _SEPARATORS:
            self.i += 1
            self.skip(_SPACE)
        c = self.peek()
        if c == _EOF:
            return              # the caller reports the unclosed map
        if c in "},":
            # nats-server mis-assigns the values that follow such a key; refuse it instead.
            raise self.error(f"key {key!r} has no value", key_at)
        m._define(key, self.value(), (self.filename, self.line_of(key_at)))

    # ---- strings

    def single_quoted(self) -> str:
        start = self.i
        end = self.text.find("'", start + 1)
        if end < 0:
            raise self.error("unterminated string: missing closing '", start)
        self.i = end + 1
        return self.text[start + 1:end]       # no escapes, no variables, may span lines

    def double_quoted(self) -> str:
        start = self.i
        self.i += 1
        pieces: list[str | bytes] = []
        seg = self.i
        while True:
            c = self.peek()
            if c == '"':
                pieces.append(self.text[seg:self.i])
                self.i += 1
                return self.join(pieces, start)
            if c == "\\":
                pieces.append(self.text[seg:self.i])
                pieces.append(self.escape())
                seg = self.i
            elif c == _EOF:
                raise self.error('unterminated string: missing closing "', start)
            else:
                self.i += 1

    def block_string(self) -> str:
        # "(" starts a raw block that ends at a ")" alone on its line.  The value keeps everything after
        # "(" up to and including the newline before ")" -- and the ")" itself when it is the last character
        # of the input, as in nats-server.
        start = self.i
        j = start + 1
        while True:
            close = self.text.find(")", j)
            if close < 0:
                raise self.error("unterminated block: '(' needs a ')' alone on a line", start)
            if self.text[close - 1] == "\n":
                if close + 1 == len(self.text):
                    self.i = close + 1
                    return self.text[start + 1:]
                if self.text[close + 1] == "\n":
                    self.i = close + 1
                    return self.text[start + 1:close]
            j = close + 1

    def escape(self) -> str | bytes:
        """A backslash escape in a double-quoted string or a bare word; the backslash is at self.i."""
        at = self.i
        c = self.peek(1)
        if c == "x":
            digits = self.text[at + 2:at + 4]
            if not _HEX2.fullmatch(digits):
                raise self.error("expected two hexadecimal digits after '\\x'", at)
            self.i += 4
            return bytes([int(digits, 16)])
        simple = {"t": "\t", "n": "\n", "r": "\r", '"': '"', "\\": "\\"}.get(c)
        if simple is None:
            what = _show(c) if c == _EOF or c in _NL else repr("\\" + c)
            raise self.error(f"invalid escape {what}: only \\xXX \\t \\n \\r \\\" \\\\ are allowed", at)
        self.i += 2
        return simple

    def join(self, pieces: list[str | bytes], at: int) -> str:
        # "\xXX" escapes give bytes; runs of them must decode as UTF-8 (nats-server would keep raw bytes).
        out: list[str] = []
        raw = bytearray()
        for piece in [*pieces, None]:
            if isinstance(piece, bytes):
                raw += piece
                continue
            if piece == "":
                continue        # keeps back-to-back escapes such as \xc3\xa9 ("é") in one run
            if raw:
                try:
                    out.append(raw.decode("utf-8"))
                except UnicodeDecodeError:
                    raise self.error("'\\x' escapes do not form valid UTF-8", at) from None
                raw.clear()
            if piece is not None:
                out.append(piece)
        return "".join(out)

    def bare_word(self, start: int) -> Value:
        """An unquoted value: a string, a boolean or a $variable.  Scanning resumes at self.i, which is past
        ``start`` when a number turned out to be a word."""
        pieces: list[str | bytes] = []
        seg = start
        while True:
            c = self.peek()
            if c == "\\":
                pieces.append(self.text[seg:self.i])
                pieces.append(self.escape())
                seg = self.i
            elif c in _BARE_STOP:
                break
            elif c == "'":
                # A quote ends the word and is dropped; the word is then a plain string.
                pieces.append(self.text[seg:self.i])
                self.i += 1
                return self.join(pieces, start)
            else:
                self.i += 1
        if pieces:
            return self.join(pieces + [self.text[seg:self.i]], start)
        word = self.text[start:self.i]
        if word.lower() in _BOOLS:
            return _BOOLS[word.lower()]
        if word.startswith("$"):
            return self.variable(word[1:], start)
        return word

    # ---- numbers

    def number(self) -> Value:
        """A value starting with a digit: an integer, a size, a float, a date, an IP address -- or a word."""
        start = self.i
        self.i += 1
        while True:
            c = self.peek()
            if c.isdecimal():
                self.i += 1
            elif c == "-":
                self.i += 1
                # Only "YYYY-" may start a date; nats-server checks that length in bytes, hence the encode.
                if len(self.text[start:self.i].encode("utf-8", "surrogatepass")) != 5:
                    raise self.error("a date must be in full Zulu form: YYYY-MM-DDTHH:MM:SSZ", start)
                return self.date(start)
            elif c == ".":
                self.i += 1
                return self.float_or_ip(start)
            elif c in _SIZE_LETTERS:
                self.i += 1
                return self.sized_integer(start)
            elif c in _INT_STOP:
                return self.to_int(start)
            else:
                # Any other character makes the token a bare word; that character is kept literally, even
                # a backslash or a ']'.
                self.i += 1
                return self.bare_word(start)

    def negative_number(self) -> Value:
        start = self.i
        self.i += 1
        if not self.peek().isdecimal():
            raise self.error(f"expected a digit after '-', found {_show(self.peek())}", start)
        while self.peek().isdecimal():
            self.i += 1
        c = self.peek()
        if c == ".":
            self.i += 1
            return self.float_or_ip(start)
        if c in _SIZE_LETTERS:
            self.i += 1
            return self.sized_integer(start)
        return self.to_int(start)       # whatever follows is for the caller to accept or reject

    def sized_integer(self, start: int) -> Value:
        while self.peek() in "bBiI":
            self.i += 1
        if self.peek() in _INT_STOP:
            return self.to_int(start)
        return self.bare_word(start)    # "500ms", "1kx", "2m30s": not a size after all

    def to_int(self, start: int) -> int:
        token = self.text[start:self.i]
        digits = token.rstrip("kKmMgGtTpPeEbBiI")
        suffix = token[len(digits):].lower()
        if not _ASCII_INT.fullmatch(digits):
            raise self.error(f"expected an integer, found {token!r}", start)
        if suffix not in _SIZE_MULT:
            raise self.error(f"unknown size suffix {token[len(digits):]!r} in {token!r}", start)
        value = int(digits) * _SIZE_MULT[suffix]
        if not _INT64_MIN <= value <= _INT64_MAX:
            raise self.error(f"integer {token!r} is out of the 64-bit range", start)
        return value

    def float_or_ip(self, start: int) -> float | str:
        """After the first '.' of a number: a float, or an IP address (two dots or more) kept as a string."""
        if not self.peek().isdecimal():
            raise self.error(f"expected a digit after '.', found {_show(self.peek())}", start)
        while self.peek().isdecimal():
            self.i += 1
        if self.peek() == ".":
            self.i += 1
            while self.peek().isdecimal() or self.peek() in ".:-":
                self.i += 1
            return self.text[start:self.i]
        token = self.text[start:self.i]
        if not _ASCII_FLOAT.fullmatch(token):
            raise self.error(f"expected a float, found {token!r}", start)
        value = float(token)
        if math.isinf(value):
            raise self.error(f"float {token!r} is out of range", start)
        return value

    def date(self, start: int) -> datetime:
        for want in _DATE_TAIL:
            c = self.peek()
            if not (c.isdecimal() if want == "0" else c == want):
                what = "a digit" if want == "0" else repr(want)
                raise self.error(f"expected {what} in a date (YYYY-MM-DDTHH:MM:SSZ), found {_show(c)}")
            self.i += 1
        token = self.text[start:self.i]
        try:
            if not token.isascii():
                raise ValueError("non-ASCII digits")
            return datetime.strptime(token, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        except ValueError as e:
            raise self.error(f"invalid date {token!r}: {e}", start) from None

    # ---- variables

    def variable(self, name: str, at: int) -> Value:
        if name.startswith("2a$"):
            return "$" + name       # a bcrypt hash, not a variable
        for scope in reversed(self.scopes):
            if name in scope:
                scope._used.add(name)
                return copy.deepcopy(scope[name])
        if name in self.env_refs:
            raise self.error(f"variable ${name} refers to itself through the environment", at)
        raw = self.env.get(name)
        if raw is None:
            raise self.error(f"undefined variable ${name} (not a key of an enclosing map, nor in the "
                             "environment)", at)
        if self.depth >= _MAX_DEPTH:
            raise self.error(f"variables nested more than {_MAX_DEPTH} levels deep", at)
        # nats-server parses the environment value as the value of a config entry, so "4222" is an int
        # and "[a, b]" a list; $VARS in it are looked up in the environment only.
        self.env_refs.add(name)
        try:
            sub = _Parser(f"pk={raw}", f"${name}", self.base_dir, self.env, self.includes, self.env_refs,
                          self.depth + 1)
            parsed = sub.document()
        except ConfError as e:
            raise self.error(f"environment variable ${name} is not a valid value: {e.msg}", at) from None
        finally:
            self.env_refs.discard(name)
        if "pk" not in parsed:
            raise self.error(f"environment variable ${name} gives no value", at)
        return parsed["pk"]

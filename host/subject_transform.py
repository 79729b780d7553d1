"""Subject transforms: the destinations of subject mappings (nats-server `subject_transform.go`).

A transform is built once from a source pattern and a destination, and then maps literal subjects that match the
source. Destination tokens are literal, `>` (the rest of the subject), `$n` (the n-th wildcard of the source), or a
mapping function in mustache form: wildcard, partition, splitFromLeft, splitFromRight, sliceFromLeft, sliceFromRight,
split, left, right, random (names case-insensitive in their first letters, as nats-server's regular expressions).

Rules kept here, as nats-server:
1. Errors are `MappingError` whose text is nats-server's (`invalid mapping destination: <reason> in <token>`, `invalid
   subject`), so config errors read as `nats-server -t` prints them.
2. Wildcard indexes are 1-based; an index above the source's wildcard count is refused, and index 0 (or a negative
   one) picks the subject's first token, as nats-server's map lookup does.
3. Functions that cut a token (left, right, slices, splits) leave a token too short for the cut as it is.
"""

from __future__ import annotations

import random
import re

_PWC = b"*"
_FWC = b">"

# Go's `\s` in these patterns is ASCII whitespace without \v.
_FUNCTIONS = [(name, re.compile(r"{{[\t\n\f\r ]*" + pattern + r"[\t\n\f\r ]*\((.*)\)[\t\n\f\r ]*}}"))
              for name, pattern in (
                  ("wildcard", "[wW]ildcard"), ("partition", "[pP]artition"),
                  ("splitFromLeft", "[sS]plit[fF]rom[lL]eft"), ("splitFromRight", "[sS]plit[fF]rom[rR]ight"),
                  ("sliceFromLeft", "[sS]lice[fF]rom[lL]eft"), ("sliceFromRight", "[sS]lice[fF]rom[rR]ight"),
                  ("right", "[rR]ight"), ("left", "[lL]eft"), ("split", "[sS]plit"), ("random", "[rR]andom"))]
_ARG_SEP = re.compile(r",[\t\n\f\r ]*")
_ATOI = re.compile(r"[+-]?[0-9]+")
_INT32_MAX = 2**31 - 1
_INT64_MAX = 2**63 - 1

# Destination token kinds (nats-server's transform types).
NO_TRANSFORM = "literal"
WILDCARD = "wildcard"
PARTITION = "partition"
SPLIT_FROM_LEFT = "splitFromLeft"
SPLIT_FROM_RIGHT = "splitFromRight"
SLICE_FROM_LEFT = "sliceFromLeft"
SLICE_FROM_RIGHT = "sliceFromRight"
SPLIT = "split"
LEFT = "left"
RIGHT = "right"
RANDOM = "random"

INVALID_DEST = "invalid mapping destination"
INVALID_TRANSFORM = INVALID_DEST + ": invalid transform"
UNKNOWN_FUNCTION = INVALID_DEST + ": unknown function"
INDEX_OUT_OF_RANGE = INVALID_DEST + ": wildcard index out of range"
NOT_ENOUGH_ARGS = INVALID_DEST + ": not enough arguments passed to the function"
INVALID_ARG = INVALID_DEST + ": function argument is invalid or in the wrong format"
TOO_MANY_ARGS = INVALID_DEST + ": too many arguments passed to the function"
BAD_SUBJECT = "invalid subject"  # nats-server ErrBadSubject


class MappingError(ValueError):
    """A destination nats-server refuses; str() is its error text."""

    def __init__(self, reason: str, token: str = "") -> None:
        super().__init__(f"{reason} in {token}" if token else reason)


def _atoi(text: str, token: str, limit: int = _INT64_MAX) -> int:
    """Go's strconv.Atoi (ParseInt with 32 bits where limit says so) on an argument trimmed of spaces."""
    s = text.strip(" ")
    if not _ATOI.fullmatch(s) or not -limit - 1 <= int(s) <= limit:
        raise MappingError(INVALID_ARG, token)
    return int(s)


def _index_int_args(token: str, args: list[str], kind: str) -> tuple[str, list[int], int, str]:
    """A function of (wildcard index, integer) (transformIndexIntArgsHelper)."""
    if len(args) < 2:
        raise MappingError(NOT_ENOUGH_ARGS, token)
    if len(args) > 2:
        raise MappingError(TOO_MANY_ARGS, token)
    return kind, [_atoi(args[0], token)], _atoi(args[1], token, _INT32_MAX), ""


def _placeholder(token: str) -> tuple[str, list[int], int, str]:
    """What a destination token asks for: (kind, wildcard indexes, integer argument, string argument)
    (indexPlaceHolders)."""
    n = len(token)
    if n > 1 and token[0] == "$":
        s = token[1:]
        if not _ATOI.fullmatch(s):
            return NO_TRANSFORM, [-1], -1, ""  # other things use tokens that start with $: a literal
        return WILDCARD, [int(s)], -1, ""
    if not (n > 4 and token.startswith("{{") and token.endswith("}}")):
        return NO_TRANSFORM, [-1], -1, ""
    for name, pattern in _FUNCTIONS:
        m = pattern.search(token)
        if m is None:
            continue
        args = _ARG_SEP.split(m.group(1))
        if name == WILDCARD:
            if len(args) == 1 and args[0] == "":
                raise MappingError(NOT_ENOUGH_ARGS, token)
            if len(args) > 1:
                raise MappingError(TOO_MANY_ARGS, token)
            return WILDCARD, [_atoi(args[0], token)], -1, ""
        if name == PARTITION:
            count = _atoi(args[0], token)
            if count > _INT32_MAX:
                raise MappingError(INVALID_ARG, token)
            return PARTITION, [_atoi(a, token) for a in args[1:]], count, ""
        if name == SPLIT:
            if len(args) < 2:
                raise MappingError(NOT_ENOUGH_ARGS, token)
            if len(args) > 2:
                raise MappingError(TOO_MANY_ARGS, token)
            index = _atoi(args[0], token)
            if " " in args[1] or "." in args[1]:
                raise MappingError(INVALID_ARG, token)
            return SPLIT, [index], -1, args[1]
        if name == RANDOM:
            if len(args) != 1:
                raise MappingError(NOT_ENOUGH_ARGS, token)
            count = _atoi(args[0], token)
            if count > _INT32_MAX:
                raise MappingError(INVALID_ARG, token)
            return RANDOM, [], count, ""
        return _index_int_args(token, args, name)
    raise MappingError(UNKNOWN_FUNCTION, token)


def validate_destination(dest: str) -> None:
    """The checks nats-server makes on a destination before building its transform (ValidateMapping): no empty
    token, nothing after `>`, a mustache token names a function, no whitespace in a literal token."""
    after_fwc = False
    for t in dest.split("."):
        if not t or after_fwc:
            raise MappingError(INVALID_TRANSFORM, t)
        if len(t) > 4 and t.startswith("{{") and t.endswith("}}"):
            if not any(pattern.search(t) for _name, pattern in _FUNCTIONS):
                raise MappingError(UNKNOWN_FUNCTION, t)
            continue
        if t == ">":
            after_fwc = True
        elif any(c in t for c in "\t\n\f\r "):
            raise MappingError(INVALID_TRANSFORM)


def _subject_info(subject: str) -> tuple[bool, list[str], int, bool]:
    """(valid, tokens, partial wildcards, ends with `>`), as nats-server subjectInfo."""
    if not subject:
        return False, [], 0, False
    tokens = subject.split(".")
    pwcs = 0
    fwc = False
    for t in tokens:
        if not t or fwc:
            return False, [], 0, False
        if t == ">":
            fwc = True
        elif t == "*":
            pwcs += 1
    return True, tokens, pwcs, fwc


def tokenize_wildcards(subject: str) -> str:
    """`foo.*.*` -> `foo.$1.$2`: the destination that maps a wildcard source onto itself (transformTokenize)."""
    out = []
    i = 1
    for t in subject.split("."):
        if t == "*":
            out.append(f"${i}")
            i += 1
        else:
            out.append(t)
    return ".".join(out)


class SubjectTransform:
    """Maps literal subjects matching `src` onto `dest` (nats-server subjectTransform, not the strict form imports
    use). `fixed`: the result depends on nothing but the subject (no random()), so callers may cache it."""

    __slots__ = ("src", "dest", "dest_b", "stoks", "ops", "fixed", "tail")

    def __init__(self, src: str, dest: str) -> None:
        src = src or ">"
        sv, stokens, npwcs, has_fwc = _subject_info(src)
        dv, dtokens, dnpwcs, dhas_fwc = _subject_info(dest)
        if not sv or not dv or dnpwcs > 0 or has_fwc != dhas_fwc:
            raise MappingError(BAD_SUBJECT)
        # the index of the source token behind each wildcard number (1-based)
        wildcard_token = {}
        for i, t in enumerate(stokens):
            if t == "*":
                wildcard_token[len(wildcard_token) + 1] = i
        ops: list[tuple[str, bytes, list[int], int, bytes]] = []
        for token in dtokens:
            kind, indexes, int_arg, str_arg = _placeholder(token)
            if npwcs or has_fwc:
                if kind not in (NO_TRANSFORM, RANDOM):
                    for w in indexes:
                        if w > npwcs:
                            raise MappingError(INDEX_OUT_OF_RANGE, f"{token}: [{w}]")
                    indexes = [wildcard_token.get(w, 0) for w in indexes]
            elif kind == PARTITION:
                indexes = []  # a literal source: the partition hashes the whole subject
            elif kind not in (NO_TRANSFORM, RANDOM):
                raise MappingError(INDEX_OUT_OF_RANGE, token)
            ops.append((kind, token.encode(), indexes, int_arg, str_arg.encode()))
        self.src = src
        self.dest = dest
        self.dest_b = dest.encode()
        self.stoks = len(stokens)
        self.ops = ops
        self.fixed = all(op[0] != RANDOM for op in ops)
        self.tail = dtokens[-1] == ">"

    def transform(self, tokens: list[bytes]) -> bytes:
        """The destination for a subject (split into tokens) that matches the source (TransformTokenizedSubject)."""
        out: list[bytes] = []
        for kind, dtok, indexes, n, sep in self.ops:
            if kind == NO_TRANSFORM:
                if dtok == _FWC:
                    break
                out.append(dtok)
            elif kind == WILDCARD:
                if indexes and indexes[0] < len(tokens):
                    out.append(tokens[indexes[0]])
                else:
                    out.append(b"")
            elif kind == PARTITION:
                key = b"".join(tokens[i] for i in indexes) if indexes else b".".join(tokens)
                out.append(b"%d" % (fnv32a(key) % (n % 2**32)) if n else b"0")  # (Go: modulo uint32(n))
            elif kind == RANDOM:
                out.append(b"%d" % (random.getrandbits(31) % abs(n)) if n else b"0")  # (Go: a positive remainder)
            else:
                out.append(_cut(kind, tokens[indexes[0]], n, sep))
        if self.tail:
            out.extend(tokens[self.stoks - 1:])
        return b".".join(out)


def _cut(kind: str, tok: bytes, n: int, sep: bytes) -> bytes:
    """The functions that reshape one token (left, right, the slices and splits)."""
    size = len(tok)
    if kind == SPLIT:
        return b".".join(p for p in tok.split(sep) if p)
    if not 0 < n < size:
        return tok  # too short to cut at n: as it is
    if kind == SPLIT_FROM_LEFT:
        return tok[:n] + b"." + tok[n:]
    if kind == SPLIT_FROM_RIGHT:
        return tok[: size - n] + b"." + tok[size - n:]
    if kind == LEFT:
        return tok[:n]
    if kind == RIGHT:
        return tok[size - n:]
    if kind == SLICE_FROM_LEFT:
        return b".".join(tok[i:i + n] for i in range(0, size, n))
    # SLICE_FROM_RIGHT: the short piece first
    first = size % n
    pieces = [tok[:first]] if first else []
    pieces.extend(tok[i:i + n] for i in range(first, size, n))
    return b".".join(pieces)


def fnv32a(data: bytes) -> int:
    """FNV-1a, 32 bits (Go's hash/fnv New32a), for partition()."""
    h = 0x811C9DC5
    for b in data:
        h = ((h ^ b) * 0x01000193) & 0xFFFFFFFF
    return h


class Mapping:
    """One `mappings` entry: a source and its weighted destinations, some maybe for one cluster only (nats-server
    mapping, built as AddWeightedMappings). Weights of a destination list (the general one, and each cluster's) add
    up to at most 100; the rest maps the subject onto itself, unless the source is listed as a destination, which
    means the rest is dropped. `dests` holds (cumulative weight, transform) in rising order."""

    __slots__ = ("src", "literal", "dests", "cluster_dests")

    def __init__(self, src: str, dests: list[tuple[str, int, str]]) -> None:
        """dests: (destination, weight 0-100, cluster or "")."""
        self.src = src
        self.literal = "*" not in src.split(".") and ">" not in src.split(".")
        general: list[tuple[int, SubjectTransform]] = []
        by_cluster: dict[str, list[tuple[int, SubjectTransform]]] = {}
        seen = set()
        totals: dict[str, int] = {}
        for subject, weight, cluster in dests:
            if subject in seen:
                raise MappingError(f'duplicate entry for "{subject}"')
            seen.add(subject)
            if weight > 100:
                raise MappingError("individual weights need to be <= 100")
            totals[cluster] = totals.get(cluster, 0) + weight
            if totals[cluster] > 100:
                raise MappingError("total weight needs to be <= 100")
            validate_destination(subject)
            tr = SubjectTransform(src, subject)
            (by_cluster.setdefault(cluster, []) if cluster else general).append((weight, tr))
        self.dests = self._cumulative(general, src in seen)
        self.cluster_dests = {c: self._cumulative(d, src in seen) for c, d in by_cluster.items()}

    def _cumulative(self, dests: list[tuple[int, SubjectTransform]], src_listed: bool) -> list[tuple[int,
                                                                                                   SubjectTransform]]:
        total = sum(w for w, _tr in dests)
        if total != 100 and not src_listed:
            rest = SubjectTransform(self.src, self.src if self.literal else tokenize_wildcards(self.src))
            dests = [*dests, (100 - total if dests else 100, rest)]
        dests = sorted(dests, key=lambda d: d[0])
        out = []
        acc = 0
        for w, tr in dests:
            acc += w
            out.append((acc, tr))
        return out

    def destinations(self, cluster: str) -> list[tuple[int, SubjectTransform]]:
        """The list that applies on a server of `cluster` (the general one when that cluster has none)."""
        if self.cluster_dests:
            return self.cluster_dests.get(cluster) or self.dests
        return self.dests

    @staticmethod
    def pick(dests: list[tuple[int, SubjectTransform]]) -> SubjectTransform | None:
        """A destination by weight; None for the share nothing takes (the message is dropped)."""
        if len(dests) == 1 and dests[0][0] == 100:
            return dests[0][1]
        w = random.randrange(100)
        for cumulative, tr in dests:
            if w < cumulative:
                return tr
        return None

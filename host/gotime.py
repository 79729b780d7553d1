"""Go's time texts as nats-server reads and writes them: `time.Duration` ("1h2m3.5s") and `time.Time` in JSON
(RFC 3339 with up to nanosecond digits). Times and durations are int nanoseconds here, as in Go.

Rules: 1. Every Go time text the hub sends or parses goes through this file, so there is one wording for each
error and one rounding for each value. 2. Errors are ValueError with Go's message where clients see it.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

NS = 1_000_000_000
MS = 1_000_000
_INT64_MAX = (1 << 63) - 1
ZERO_TIME = "0001-01-01T00:00:00Z"  # Go's zero time.Time, as nats-server writes an unset time

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_GO_TIME_LAYOUT = "2006-01-02T15:04:05Z07:00"  # time.RFC3339, named in Go's parse errors


# ---- time.Duration ---------------------------------------------------------------------------------------------

_DUR_UNITS = {"ns": 1, "us": 1_000, "µs": 1_000, "μs": 1_000, "ms": MS, "s": NS, "m": 60 * NS, "h": 3600 * NS}
_DUR_PART = re.compile(r"([0-9]*(?:\.[0-9]*)?)([^0-9.]*)")


def parse_duration(text: str) -> int:
    """Go time.ParseDuration: "1h30m", "2.5s", "300ms", "-1m", "0"; ns. ValueError with Go's text if Go would
    refuse it."""
    s = text
    neg = False
    if s[:1] in ("-", "+"):
        neg = s[0] == "-"
        s = s[1:]
    if s == "0":
        return 0
    if not s:
        raise ValueError(f'time: invalid duration "{text}"')
    total = 0.0
    pos = 0
    while pos < len(s):
        m = _DUR_PART.match(s, pos)
        if m is None or m.group(1) in ("", "."):
            raise ValueError(f'time: invalid duration "{text}"')
        if not m.group(2):
            raise ValueError(f'time: missing unit in duration "{text}"')
        unit = _DUR_UNITS.get(m.group(2))
        if unit is None:
            raise ValueError(f'time: unknown unit "{m.group(2)}" in duration "{text}"')
        total += float(m.group(1)) * unit
        pos = m.end()
    if total > _INT64_MAX:
        raise ValueError(f'time: invalid duration "{text}"')
    ns = int(total)
    return -ns if neg else ns


def format_duration(ns: int) -> str:
    """Go time.Duration.String(): 1.5s, 100ms, 2m0s, 1h0m0s, 0s."""
    if ns == 0:
        return "0s"
    neg = ns < 0
    u = -ns if neg else ns
    if u < NS:
        for unit, size in (("ms", MS), ("µs", 1000), ("ns", 1)):
            if u >= size:
                whole, frac = divmod(u, size)
                text = str(whole)
                if frac:
                    text += ("." + f"{frac:0{len(str(size)) - 1}d}").rstrip("0")
                return ("-" if neg else "") + text + unit
    secs, frac = divmod(u, NS)
    h, rem = divmod(secs, 3600)
    m, s = divmod(rem, 60)
    sec = str(s) + (("." + f"{frac:09d}").rstrip("0") if frac else "")
    text = f"{h}h{m}m{sec}s" if h else (f"{m}m{sec}s" if m else f"{sec}s")
    return ("-" if neg else "") + text


# ---- time.Time ---------------------------------------------------------------------------------------------------


_last_second: tuple[int, str] = (0, "1970-01-01T00:00:00")  # (seconds, their text): a stream stamps many per second


def _format(ns: int) -> str:
    """RFC 3339 in UTC with nanoseconds and no trailing zeros, as Go marshals time.Time (any ns, also < 0)."""
    global _last_second
    secs, frac = divmod(ns, NS)
    if secs == _last_second[0]:
        base = _last_second[1]
    else:
        base = (_EPOCH + timedelta(seconds=secs)).strftime("%Y-%m-%dT%H:%M:%S")
        _last_second = (secs, base)
    if frac:
        return f"{base}.{frac:09d}".rstrip("0") + "Z"
    return base + "Z"


def rfc3339(ns: int) -> str:
    """A stored timestamp as Go's time.Time JSON: `2026-11-26T07:31:15.162317086Z`; 0 (or less) means unset and
    is Go's zero time, as nats-server writes a time it never set."""
    if ns <= 0:
        return ZERO_TIME
    return _format(ns)


def time_text(ns: int | None) -> str:
    """A time as Go marshals time.Time; None is Go's zero time. Unlike `rfc3339`, 0 is the Unix epoch (a time a
    client set on purpose, which Go does not treat as zero)."""
    if ns is None:
        return ZERO_TIME
    return _format(ns)


def parse_time(text: Any) -> int | None:
    """An RFC 3339 time as Go's time.Time JSON decoding accepts it: ns since the epoch, or None for Go's zero
    time. Raises ValueError with Go's message."""
    if not isinstance(text, str):
        raise ValueError("Time.UnmarshalJSON: input is not a JSON string")
    bad = ValueError(f'parsing time "{text}" as "{_GO_TIME_LAYOUT}": cannot parse "{text}" as "2006"')
    if len(text) < 20 or text[4] != "-" or text[10] not in "Tt":
        raise bad
    if text.startswith("0001-01-01T00:00:00") and text[19:] in ("Z", "z", "+00:00"):
        return None
    main, frac, rest = text[:19], "", text[19:]
    if rest.startswith("."):
        i = 1
        while i < len(rest) and rest[i].isdigit():
            i += 1
        frac, rest = rest[1:i], rest[i:]
        if not frac:
            raise bad
    try:
        tz = UTC if rest in ("Z", "z") else datetime.strptime(rest.replace(":", ""), "%z").tzinfo
        dt = datetime.strptime(main, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=tz)
    except ValueError:
        raise bad from None
    whole = int((dt - _EPOCH).total_seconds())
    return whole * NS + int((frac + "000000000")[:9] or 0)

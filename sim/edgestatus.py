"""What an edge says about itself on `$EDGE.<name>.<kind>`: `status`, `forward` (the store-and-forward queue's
status, edge/leaf/forward.py), `gap` (markers for records it had to drop), and whatever later layers add.

The last message of each kind is kept (decoded when it is JSON) with a count per kind; at most MAX_KINDS kinds per
edge, so a chatty edge cannot grow the simulator or the dashboard.
"""

from __future__ import annotations

import json
from typing import Any

SUBJECT = "$EDGE.*.*"
MAX_KINDS = 8
MAX_TEXT = 500


def split_subject(subject: bytes) -> tuple[str, str] | None:
    """b"$EDGE.kitchen-1.forward" -> ("kitchen-1", "forward")."""
    tokens = subject.split(b".")
    if len(tokens) != 3 or tokens[0] != b"$EDGE":
        return None
    return tokens[1].decode(errors="replace"), tokens[2].decode(errors="replace")


def forward_backlog(fwd: Any) -> int | None:
    """The messages waiting to go to the hub in a forward status (edge/leaf/forward.py): its queues' backlogs summed."""
    if isinstance(fwd, dict) and isinstance(fwd.get("queues"), list):
        values = [q.get("backlog") for q in fwd["queues"] if isinstance(q, dict)]
        if values and all(isinstance(v, int) for v in values):
            return sum(values)
    return None


class EdgeStatus:
    def __init__(self) -> None:
        self.last: dict[str, Any] = {}
        self.counts: dict[str, int] = {}
        self.at: float | None = None

    def update(self, kind: str, payload: bytes, now: float) -> None:
        if kind not in self.last and len(self.last) >= MAX_KINDS:
            return
        try:
            self.last[kind] = json.loads(payload)
        except ValueError:
            self.last[kind] = payload[:MAX_TEXT].decode(errors="replace")
        self.counts[kind] = self.counts.get(kind, 0) + 1
        self.at = now

    def backlog(self) -> int | None:
        """Messages waiting to go to the hub: the forward queues' backlogs, or a `backlog` in the status message."""
        backlog = forward_backlog(self.last.get("forward"))
        if backlog is not None:
            return backlog
        st = self.last.get("status")
        if isinstance(st, dict) and isinstance(st.get("backlog"), int):
            return st["backlog"]
        return None

    def to_json(self, now: float) -> dict[str, Any] | None:
        if self.at is None:
            return None
        return {"last": dict(self.last), "counts": dict(self.counts), "backlog": self.backlog(),
                "age_s": round(now - self.at, 1)}

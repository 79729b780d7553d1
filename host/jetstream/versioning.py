"""JetStream API levels (ADR-44, nats-server `jetstream_versioning.go`): the level the hub claims, the metadata keys
that record which level an asset needs and which server answered, and the `Nats-Required-Api-Level` check.

Rules: 1. `_nats.req.level` is stored with the config (static); `_nats.level` and `_nats.ver` are only added to
responses (dynamic) and dropped from what clients send. 2. Every API and pull request checks the header here.
"""

from __future__ import annotations

import re
from typing import Any

from host.headers import hdr_get
from host.jetstream.errors import js_error

# JetStream API level we claim (ADR-44): clients gate features on it. Level 1 is what 2.11 brought (per-message
# TTL, subject delete markers, consumer pause, priority groups); later levels (counters, atomic and fast batch
# publish, schedules) are not implemented, so the hub does not claim them (nats-server 2.15.1 says 5).
API_LEVEL = 1

META_REQ_LEVEL = "_nats.req.level"  # nats-server JSRequiredLevelMetadataKey
META_LEVEL = "_nats.level"  # JSServerLevelMetadataKey
META_VERSION = "_nats.ver"  # JSServerVersionMetadataKey
H_REQUIRED_API_LEVEL = b"\r\nNats-Required-Api-Level:"  # JSRequiredApiLevel, as hdr_get takes it
_ATOI = re.compile(rb"[+-]?[0-9]+")  # what Go's strconv.Atoi accepts


def api_level_too_high(hdr: bytes | None) -> bool:
    """nats-server errorOnRequiredApiLevel: the request asks for a level above ours (or not a number)."""
    if not hdr:
        return False
    v = hdr_get(hdr, H_REQUIRED_API_LEVEL)
    if not v:
        return False
    return not _ATOI.fullmatch(v) or int(v) > API_LEVEL


def check_api_level(hdr: bytes | None) -> None:
    """The API answer to a level above ours (pull requests and direct gets answer with a status instead)."""
    if api_level_too_high(hdr):
        raise js_error("JSRequiredApiLevelErr")


def _static(cfg: dict[str, Any], level: int) -> None:
    meta = dict(cfg.get("metadata") or {})
    meta.pop(META_VERSION, None)
    meta.pop(META_LEVEL, None)
    meta[META_REQ_LEVEL] = str(level)
    cfg["metadata"] = meta


def set_static_stream_metadata(cfg: dict[str, Any]) -> None:
    """nats-server setStaticStreamMetadata: `_nats.req.level` = the API level the stream's features need."""
    _static(cfg, 1 if cfg.get("allow_msg_ttl") or cfg.get("subject_delete_marker_ttl") else 0)


def set_static_consumer_metadata(cfg: dict[str, Any]) -> None:
    """nats-server setStaticConsumerMetadata: level 1 for pause and priority groups."""
    level = 0
    if cfg["pause_until"] is not None:
        level = 1
    if cfg["priority_policy"] != "none" or cfg["priority_timeout"] or cfg["priority_groups"]:
        level = 1
    _static(cfg, level)


def dynamic_metadata(meta: dict[str, str] | None, version: str) -> dict[str, str]:
    """nats-server setDynamic*Metadata: the stored metadata plus the level and version of the answering server."""
    out = dict(meta or {})
    out[META_VERSION] = version
    out[META_LEVEL] = str(API_LEVEL)
    return out

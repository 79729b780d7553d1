"""Stream configs (nats-server `stream.go` StreamConfig, checkStreamCfg, configUpdateCheck): the JSON schema as Go
decodes it, the defaults and checks with nats-server's texts, what an update may not change, the store settings a
config implies, and the subject and name rules JetStream assets share. Pure functions; no stream state.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from host.gotime import NS
from host.jetstream.errors import js_error
from host.jetstream.gojson import Enum, Struct
from host.jetstream.store import (
    DISCARD_NEW,
    Filter,
    StoreConfig,
)
from host.subject_transform import MappingError, SubjectTransform, validate_destination

if TYPE_CHECKING:
    from host.jetstream.jetstream import JSAccount


DEFAULT_DUPLICATE_WINDOW = 120 * NS  # nats-server StreamDefaultDuplicatesWindow
# Limits every JetStream asset and listing shares (nats-server jetstream_api.go / stream.go).
MAX_NAME_LEN = 255  # JSMaxNameLen
MAX_DESCRIPTION_LEN = 4 * 1024  # JSMaxDescriptionLen
MAX_METADATA_LEN = 128 * 1024  # JSMaxMetadataLen
NAMES_LIMIT = 1024  # JSApiNamesLimit
LIST_LIMIT = 256  # JSApiListLimit

RETENTIONS = ("limits", "interest", "workqueue")

# StreamConfigRequest as Go decodes it (gojson.py).
STREAM_CONFIG_SCHEMA: dict[str, Any] = {
    "name": "string", "description": "string", "subjects": "strings", "retention": Enum(*RETENTIONS),
    "max_consumers": "int", "max_msgs": "int64", "max_bytes": "int64", "max_age": "duration",
    "max_msgs_per_subject": "int64", "max_msg_size": "int32", "discard": Enum("old", "new", any_case=True),
    "storage": Enum("file", "memory"), "num_replicas": "int", "no_ack": "bool", "duplicate_window": "duration",
    "placement": "any", "mirror": "any", "sources": "any", "compression": Enum("none", "s2"), "first_seq": "uint64",
    "subject_transform": Struct("server.SubjectTransformConfig", {"src": "string", "dest": "string"}),
    "republish": Struct("server.RePublish", {"src": "string", "dest": "string", "headers_only": "bool"}),
    "allow_direct": "bool", "mirror_direct": "bool",
    "discard_new_per_subject": "bool", "sealed": "bool", "deny_delete": "bool", "deny_purge": "bool",
    "allow_rollup_hdrs": "bool",
    "consumer_limits": Struct("server.StreamConsumerLimits",
                              {"inactive_threshold": "duration", "max_ack_pending": "int"}),
    "allow_msg_ttl": "bool", "subject_delete_marker_ttl": "duration", "allow_msg_counter": "bool",
    "allow_atomic": "bool", "allow_msg_schedules": "bool", "persist_mode": Enum("default", "async", ""),
    "allow_batched": "bool", "metadata": "map", "pedantic": "bool",
}

# Features of nats-server's StreamConfig the hub does not implement: asking for them is an error, not a no-op.
_UNSUPPORTED = {
    "mirror": "mirrors", "sources": "sources", "allow_msg_counter": "message counters",
    "allow_atomic": "atomic publish", "allow_msg_schedules": "message schedules", "allow_batched": "batch publish",
}


# ---- subjects --------------------------------------------------------------------------------------------------


def is_valid_subject(subject: str) -> bool:
    """nats-server IsValidSubject: non-empty tokens, no whitespace, `>` only last."""
    if not subject:
        return False
    toks = subject.split(".")
    for i, t in enumerate(toks):
        if not t or (t == ">" and i != len(toks) - 1):
            return False
        if any(c in t for c in " \t\r\n\f"):
            return False
    return True


def is_literal(subject: str) -> bool:
    return not any(t in ("*", ">") for t in subject.split("."))


def subject_matches(pattern: str, subject: str) -> bool:
    return Filter(pattern).match(subject)


def subjects_collide(a: str, b: str) -> bool:
    """nats-server SubjectsCollide: can some subject match both a and b?"""
    if a == b:
        return True
    ta, tb = a.split("."), b.split(".")
    la, lb = is_literal(a), is_literal(b)
    if la and lb:
        return False
    if la:
        return subject_matches(b, a)
    if lb:
        return subject_matches(a, b)
    fa, fb = ta[-1] == ">", tb[-1] == ">"
    if not fa and not fb and len(ta) != len(tb):
        return False
    if len(ta) != len(tb) and ((len(ta) < len(tb) and not fa) or (len(tb) < len(ta) and not fb)):
        return False
    for x, y in zip(ta, tb, strict=False):
        if x not in ("*", ">") and y not in ("*", ">") and x != y:
            return False
    return True


def is_valid_asset_name(name: str) -> bool:
    return bool(name) and not any(c in name for c in " \t\r\n\f.*>\\/")


# ---- config ------------------------------------------------------------------------------------------------------


def check_config(req: dict[str, Any], jsa: JSAccount, pedantic: bool = False) -> dict[str, Any]:
    """nats-server checkStreamCfg: validate a decoded StreamConfig and fill in the defaults nats-server answers
    with. Returns the config in nats-server's JSON field order (without the response-only metadata)."""
    name = req.get("name", "")
    if not is_valid_asset_name(name):
        raise js_error("JSStreamInvalidConfigF",
                       err="stream name is required and can not contain '.', '*', '>', '\\', '/'")
    if len(name) > MAX_NAME_LEN:
        raise js_error("JSStreamInvalidConfigF", err=f"stream name is too long, maximum allowed is {MAX_NAME_LEN}")
    if len(req.get("description", "")) > MAX_DESCRIPTION_LEN:
        raise js_error("JSStreamInvalidConfigF",
                       err=f"stream description is too long, maximum allowed is {MAX_DESCRIPTION_LEN}")
    metadata = dict(req.get("metadata") or {})
    if sum(len(k) + len(v) for k, v in metadata.items()) > MAX_METADATA_LEN:
        raise js_error("JSStreamInvalidConfigF",
                       err=f"stream metadata exceeds maximum size of {MAX_METADATA_LEN} bytes")
    for key, what in _UNSUPPORTED.items():
        if req.get(key):
            raise js_error("JSStreamInvalidConfigF", err=f"{what} are not supported by this server"
                                            if what.endswith("s") else f"{what} is not supported by this server")
    if req.get("persist_mode") == "async":
        raise js_error("JSStreamInvalidConfigF", err="async persist mode is not supported by this server")
    placement = req.get("placement")
    if placement not in (None, {}) and (not isinstance(placement, dict) or any(placement.values())):
        raise js_error("JSStreamInvalidConfigF", err="placement is not supported by this server")

    def limit(key: str) -> int:
        v = req.get(key, 0)
        if v == 0 or v < -1:
            if pedantic and v < -1:
                raise js_error("JSPedanticErrF", err=f"{key} must be set to -1")
            return -1
        return v

    storage = req.get("storage") or "file"
    replicas = req.get("num_replicas", 0) or 1
    if replicas > 5:
        raise js_error("JSStreamInvalidConfigF", err="maximum replicas is 5")
    if replicas < 0:
        raise js_error("JSReplicasCountCannotBeNegative")
    max_msgs = limit("max_msgs")
    max_msgs_per = limit("max_msgs_per_subject")
    max_bytes = limit("max_bytes")
    max_msg_size = limit("max_msg_size")
    max_consumers = limit("max_consumers")
    max_age = req.get("max_age", 0)
    if max_age < 0:
        raise js_error("JSStreamInvalidConfigF", err="max age can not be negative")
    if max_age != 0 and max_age < NS // 10:
        raise js_error("JSStreamInvalidConfigF", err="max age needs to be >= 100ms")
    dups = req.get("duplicate_window", 0)
    if dups == 0:
        if max_age != 0 and max_age < DEFAULT_DUPLICATE_WINDOW:
            if pedantic:
                raise js_error("JSPedanticErrF", err="duplicate window cannot be bigger than max age")
            dups = max_age
        else:
            dups = DEFAULT_DUPLICATE_WINDOW
    if dups < 0:
        raise js_error("JSStreamInvalidConfigF", err="duplicates window can not be negative")
    if max_age != 0 and dups > max_age:
        raise js_error("JSStreamInvalidConfigF", err="duplicates window can not be larger then max age")
    if 0 < dups < NS // 10:
        raise js_error("JSStreamInvalidConfigF", err="duplicates window needs to be >= 100ms")
    deny_purge = bool(req.get("deny_purge"))
    allow_rollup = bool(req.get("allow_rollup_hdrs"))
    if deny_purge and allow_rollup:
        raise js_error("JSStreamInvalidConfigF", err="roll-ups require the purge permission")
    discard = (req.get("discard") or "old").lower()
    discard_new_per = bool(req.get("discard_new_per_subject"))
    if discard_new_per:
        if discard != DISCARD_NEW:
            raise js_error("JSStreamInvalidConfigF",
                           err="discard new per subject requires discard new policy to be set")
        if max_msgs_per <= 0:
            raise js_error("JSStreamInvalidConfigF", err="discard new per subject requires max msgs per subject > 0")
    allow_ttl = bool(req.get("allow_msg_ttl"))
    sdm_ttl = req.get("subject_delete_marker_ttl", 0)
    if sdm_ttl > 0:
        if sdm_ttl < NS:
            raise js_error("JSStreamInvalidConfigF", err="subject delete marker TTL must be at least 1 second")
        if not allow_ttl:
            if pedantic:
                raise js_error("JSStreamInvalidConfigF",
                               err="subject delete marker cannot be set if message TTLs are disabled")
            allow_ttl = True
        if not allow_rollup:
            if pedantic:
                raise js_error("JSStreamInvalidConfigF",
                               err="subject delete marker cannot be set if roll-ups are disabled")
            allow_rollup, deny_purge = True, False
    elif sdm_ttl < 0:
        raise js_error("JSStreamInvalidConfigF", err="subject delete marker TTL must not be negative")

    no_ack = bool(req.get("no_ack"))
    subjects = list(req.get("subjects") or [])
    if not subjects:
        subjects = [name]
    else:
        seen: set[str] = set()
        for i, subj in enumerate(subjects):
            if not is_valid_subject(subj):
                raise js_error("JSStreamInvalidConfigF", err="invalid subject")
            if subj in seen:
                raise js_error("JSStreamInvalidConfigF", err="duplicate subjects detected")
            if subj == ">":
                if not no_ack:
                    raise js_error("JSStreamInvalidConfigF", err="capturing all subjects requires no-ack to be true")
                if replicas != 1:
                    raise js_error("JSStreamInvalidConfigF", err="capturing all subjects requires replicas of 1")
            if not no_ack:
                for ns in ("$JS.>", "$JSC.>", "$NRG.>"):
                    if subjects_collide(subj, ns) and not subject_matches("$JS.EVENT.>", subj):
                        raise js_error("JSStreamInvalidConfigF",
                                       err="subjects that overlap with jetstream api require no-ack to be true")
                if subjects_collide(subj, "$SYS.>") and not subject_matches("$SYS.ACCOUNT.>", subj):
                    raise js_error("JSStreamInvalidConfigF",
                                   err="subjects that overlap with system api require no-ack to be true")
            for other in subjects[i + 1:]:
                if subjects_collide(other, subj):
                    raise js_error("JSStreamInvalidConfigF",
                                   err=f"subject {json.dumps(subj)} overlaps with {json.dumps(other)}")
            seen.add(subj)

    transform, republish = _check_transforms(req, subjects, pedantic)

    # Field order and omitempty as nats-server's StreamConfig JSON.
    cfg: dict[str, Any] = {"name": name}
    if req.get("description"):
        cfg["description"] = req["description"]
    cfg["subjects"] = subjects
    cfg["retention"] = req.get("retention") or "limits"
    cfg["max_consumers"] = max_consumers
    cfg["max_msgs"] = max_msgs
    cfg["max_bytes"] = max_bytes
    cfg["max_age"] = max_age
    cfg["max_msgs_per_subject"] = max_msgs_per
    cfg["max_msg_size"] = max_msg_size
    cfg["discard"] = discard
    cfg["storage"] = storage
    cfg["num_replicas"] = replicas
    if no_ack:
        cfg["no_ack"] = True
    if dups:
        cfg["duplicate_window"] = dups
    cfg["compression"] = req.get("compression") or "none"
    if req.get("first_seq"):
        cfg["first_seq"] = req["first_seq"]
    if transform is not None:
        cfg["subject_transform"] = transform
    if republish is not None:
        cfg["republish"] = republish
    cfg["allow_direct"] = bool(req.get("allow_direct"))
    cfg["mirror_direct"] = bool(req.get("mirror_direct"))
    if discard_new_per:
        cfg["discard_new_per_subject"] = True
    cfg["sealed"] = bool(req.get("sealed"))
    cfg["deny_delete"] = bool(req.get("deny_delete"))
    cfg["deny_purge"] = deny_purge
    cfg["allow_rollup_hdrs"] = allow_rollup
    limits = req.get("consumer_limits") or {}
    cfg["consumer_limits"] = {k: limits[k] for k in ("inactive_threshold", "max_ack_pending") if limits.get(k)}
    cfg["allow_msg_ttl"] = allow_ttl
    if sdm_ttl:
        cfg["subject_delete_marker_ttl"] = sdm_ttl
    metadata.pop("_nats.ver", None)
    metadata.pop("_nats.level", None)
    if metadata:
        cfg["metadata"] = metadata
    return cfg


def _check_transforms(req: dict[str, Any], subjects: list[str], pedantic: bool
                      ) -> tuple[dict[str, str] | None, dict[str, Any] | None]:
    """nats-server checkStreamCfg on `subject_transform` (applied to what the stream receives, before anything
    else) and `republish` (sends what was stored on to another subject): their JSON as nats-server writes it."""
    transform = None
    tr = req.get("subject_transform")
    if tr is not None:
        src, dest = tr.get("src", ""), tr.get("dest", "")
        if src and not is_valid_subject(src):
            raise js_error("JSStreamTransformInvalidSource", err=f"invalid subject {src}")
        if dest:
            try:
                validate_destination(dest)
                SubjectTransform(src, dest)
            except MappingError as e:
                raise js_error("JSStreamTransformInvalidDestination", err=str(e)) from None
        transform = {"src": src, "dest": dest}
    republish = None
    rp = req.get("republish")
    if rp is not None:
        src, dest = rp.get("src", ""), rp.get("dest", "")
        if not src:
            if pedantic:
                raise js_error("JSPedanticErrF", err="republish source can not be empty")
            src = ">"
        # '>' to '>' would loop through the stream's own subjects, unless the transform moves them elsewhere:
        # then everything is republished on its transformed subject
        if dest == ">" and src == ">" and transform is not None and len(subjects) == 1 and \
                transform["src"] == subjects[0]:
            if pedantic:
                raise js_error("JSPedanticErrF", err="implicit republish based on subject transform")
            src = dest = transform["dest"]
        if any(subjects_collide(dest, s) for s in subjects):
            raise js_error("JSStreamInvalidConfigF", err="stream configuration for republish destination forms a cycle")
        try:
            if dest:  # nats-server NewSubjectTransform: no destination, no transform (and no error)
                SubjectTransform(src, dest)
        except MappingError:
            raise js_error("JSStreamInvalidConfigF", err=f"stream configuration for republish with transform from "
                                                         f"'{src}' to '{dest}' not valid") from None
        republish = {"src": src, "dest": dest}
        if rp.get("headers_only"):
            republish["headers_only"] = True
    return transform, republish


def sorted_metadata(cfg: dict[str, Any]) -> dict[str, Any]:
    if "metadata" not in cfg:
        return cfg
    out = dict(cfg)
    out["metadata"] = dict(sorted(cfg["metadata"].items()))
    return out


def update_check(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """nats-server configUpdateCheck (after check_config): what an update may not change. Returns the config to
    apply (sealing forces its companions)."""
    cfg = dict(new)
    if cfg["name"] != old["name"]:
        raise js_error("JSStreamInvalidConfigF", err="stream configuration name must match original")
    if cfg["num_replicas"] > 1:
        raise js_error("JSStreamReplicasNotSupportedErr")
    if cfg["storage"] != old["storage"]:
        raise js_error("JSStreamInvalidConfigF", err="stream configuration update can not change storage type")
    if cfg["retention"] != old["retention"] and "workqueue" in (cfg["retention"], old["retention"]):
        raise js_error("JSStreamInvalidConfigF",
                       err="stream configuration update can not change retention policy to/from workqueue")
    if not cfg["sealed"] and old["sealed"]:
        raise js_error("JSStreamInvalidConfigF", err="stream configuration update can not unseal a sealed stream")
    if not cfg["deny_delete"] and old["deny_delete"]:
        raise js_error("JSStreamInvalidConfigF", err="stream configuration update can not cancel deny message deletes")
    if not cfg["deny_purge"] and old["deny_purge"]:
        raise js_error("JSStreamInvalidConfigF", err="stream configuration update can not cancel deny purge")
    if old["allow_msg_ttl"] and not cfg["allow_msg_ttl"]:
        raise js_error("JSStreamInvalidConfigF", err="message TTL status can not be disabled")
    if cfg["sealed"]:
        cfg["max_age"] = 0
        cfg["discard"] = DISCARD_NEW
        cfg["deny_delete"] = cfg["deny_purge"] = True
        cfg["allow_rollup_hdrs"] = False
    return cfg


def store_config(cfg: dict[str, Any], store_dir: str | None, sync: str | float) -> StoreConfig:
    """The store's settings from a stream config (durations in seconds there)."""
    return StoreConfig(
        name=cfg["name"], store_dir=store_dir, max_msgs=cfg["max_msgs"], max_bytes=cfg["max_bytes"],
        max_age=cfg["max_age"] / NS, max_msgs_per_subject=cfg["max_msgs_per_subject"],
        max_msg_size=cfg["max_msg_size"], discard=cfg["discard"],
        discard_new_per_subject=bool(cfg.get("discard_new_per_subject")), allow_msg_ttl=cfg["allow_msg_ttl"],
        subject_delete_marker_ttl=cfg.get("subject_delete_marker_ttl", 0) // NS,
        first_seq=cfg.get("first_seq", 0), sync=sync)

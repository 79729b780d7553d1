"""Stream configs (nats-server `stream.go` StreamConfig, checkStreamCfg, configUpdateCheck): the JSON schema as Go
decodes it, the defaults and checks with nats-server's texts, what an update may not change, the store settings a
config implies, and the subject and name rules JetStream assets share. Pure functions; no stream state.
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any

from edge.subjects import is_literal as literal
from edge.subjects import valid
from host.gotime import NS, time_text
from host.jetstream.errors import js_error
from host.jetstream.gojson import Enum, Struct, StructList
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
JS_API_PREFIX = "$JS.API"  # nats-server JSApiPrefix: what an external api prefix may not overlap

# StreamSource (a stream's `mirror` and each of its `sources`) as Go decodes it.
STREAM_SOURCE_SCHEMA = Struct("server.StreamSource", {
    "name": "string", "opt_start_seq": "uint64", "opt_start_time": "time", "filter_subject": "string",
    "subject_transforms": StructList(Struct("server.SubjectTransformConfig", {"src": "string", "dest": "string"})),
    "external": Struct("server.ExternalStream", {"api": "string", "deliver": "string"}),
    "consumer": Struct("server.StreamConsumerSource", {"name": "string", "deliver_subject": "string"}),
})

# StreamConfigRequest as Go decodes it (gojson.py).
STREAM_CONFIG_SCHEMA: dict[str, Any] = {
    "name": "string", "description": "string", "subjects": "strings", "retention": Enum(*RETENTIONS),
    "max_consumers": "int", "max_msgs": "int64", "max_bytes": "int64", "max_age": "duration",
    "max_msgs_per_subject": "int64", "max_msg_size": "int32", "discard": Enum("old", "new", any_case=True),
    "storage": Enum("file", "memory"), "num_replicas": "int", "no_ack": "bool", "duplicate_window": "duration",
    "placement": "any", "mirror": STREAM_SOURCE_SCHEMA, "sources": StructList(STREAM_SOURCE_SCHEMA),
    "compression": Enum("none", "s2"), "first_seq": "uint64",
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
    "allow_msg_counter": "message counters", "allow_atomic": "atomic publish",
    "allow_msg_schedules": "message schedules", "allow_batched": "batch publish",
}


# ---- subjects --------------------------------------------------------------------------------------------------


def is_valid_subject(subject: str) -> bool:
    """A well-formed subject, wildcards allowed (edge/subjects.py valid: the one rule, on bytes)."""
    return valid(subject.encode())


def is_literal(subject: str) -> bool:
    return literal(subject.encode())


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
    mirror, sources = check_sources(req, jsa)
    dups = req.get("duplicate_window", 0)
    if dups == 0 and mirror is None and not sources:
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
        if mirror is None and not sources:
            subjects = [name]
    elif mirror is not None:
        raise js_error("JSMirrorWithSubjectsErr")
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
    if subjects:
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
    if mirror is not None:
        cfg["mirror"] = mirror
    if sources:
        cfg["sources"] = sources
    cfg["compression"] = req.get("compression") or "none"
    if req.get("first_seq"):
        cfg["first_seq"] = req["first_seq"]
    if transform is not None:
        cfg["subject_transform"] = transform
    if republish is not None:
        cfg["republish"] = republish
    cfg["allow_direct"] = bool(req.get("allow_direct"))
    cfg["mirror_direct"] = bool(req.get("mirror_direct"))
    if mirror is not None and "external" not in mirror and mirror["name"] in jsa.streams:
        # nats-server: a mirror of a stream it can see inherits the origin's direct gets
        origin_direct = jsa.streams[mirror["name"]].config["allow_direct"]
        if pedantic and cfg["mirror_direct"] != origin_direct:
            raise js_error("JSPedanticErrF", err="origin stream has direct get set, mirror has it disabled")
        cfg["mirror_direct"] = origin_direct
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


def check_sources(req: dict[str, Any], jsa: JSAccount) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """nats-server checkStreamCfg for `mirror` and `sources` -> (mirror, sources) in Go's JSON field order."""
    mirror = req.get("mirror")
    sources = list(req.get("sources") or [])
    deliver_prefixes: list[str] = []
    api_prefixes: list[str] = []
    origin_subjects: list[str] = []

    def external_of(src: dict[str, Any]) -> None:
        ext = src.get("external")
        if ext is None:
            origin = jsa.streams.get(src.get("name", ""))
            if origin is not None:
                origin_subjects.extend(origin.config.get("subjects", []))
            return
        if ext.get("deliver"):
            deliver_prefixes.append(ext["deliver"])
        if ext.get("api"):
            api_prefixes.append(ext["api"])

    if mirror is not None:
        if req.get("first_seq"):
            raise js_error("JSMirrorWithFirstSeqErr")
        if req.get("subjects"):
            raise js_error("JSMirrorWithSubjectsErr")
        if sources:
            raise js_error("JSMirrorWithSourcesErr")
        # (counters, atomic and batch publish and schedules, which nats-server refuses on a mirror with their own
        # errors, are refused for every stream by check_config first: the hub does not implement them)
        if mirror.get("filter_subject") and mirror.get("subject_transforms"):
            raise js_error("JSMirrorMultipleFiltersNotAllowed")
        if req.get("subject_delete_marker_ttl", 0) > 0:
            raise js_error("JSStreamInvalidConfigF", err="subject delete markers forbidden on mirrors")
        if mirror.get("external") is None:
            if not is_valid_asset_name(mirror.get("name", "")):
                raise js_error("JSMirrorInvalidStreamName")
            origin = jsa.streams.get(mirror["name"])
            mms = req.get("max_msg_size", 0)
            if origin is not None and mms > 0 and 0 < origin.config["max_msg_size"] > mms:
                raise js_error("JSMirrorMaxMessageSizeTooBigErr")
        external_of(mirror)
    inames: set[str] = set()
    for src in sources:
        if not is_valid_asset_name(src.get("name", "")):
            raise js_error("JSSourceInvalidStreamName")
        iname = source_iname(src)
        if iname in inames:
            raise js_error("JSSourceDuplicateDetected")
        inames.add(iname)
        if src.get("filter_subject") and src.get("subject_transforms"):
            raise js_error("JSSourceMultipleFiltersNotAllowed")
        if src.get("external") is None:
            origin = jsa.streams.get(src["name"])
            mms = req.get("max_msg_size", 0)
            if origin is not None and mms > 0 and 0 < origin.config["max_msg_size"] > mms:
                raise js_error("JSSourceMaxMessageSizeTooBigErr")
        external_of(src)
    for src in ([mirror] if mirror is not None else sources):
        check_source_transforms(src.get("subject_transforms") or [], mirror=src is mirror)
        if src.get("consumer"):
            raise js_error("JSStreamInvalidConfigF",
                           err="durable consumers of sources and mirrors are not supported by this server")
    for pfx in deliver_prefixes:
        if not is_valid_subject(pfx) or not is_literal(pfx):
            raise js_error("JSStreamInvalidExternalDeliverySubjErrF", prefix=pfx)
        for sub in origin_subjects:
            if subjects_collide(sub, f"{pfx}.{sub}"):
                raise js_error("JSStreamExternalDelPrefixOverlapsErrF", prefix=pfx, subject=sub)
    for pfx in api_prefixes:
        if not is_valid_subject(pfx) or not is_literal(pfx):
            raise js_error("JSStreamInvalidConfigF", err=f"stream external api prefix {json.dumps(pfx)} must be a "
                                                         "valid subject without wildcards")
        if subjects_collide(pfx, JS_API_PREFIX):
            raise js_error("JSStreamExternalApiOverlapErrF", prefix=pfx, subject=JS_API_PREFIX)
    return (source_json(mirror) if mirror is not None else None), [source_json(src) for src in sources]


def check_source_transforms(transforms: list[dict[str, str]], mirror: bool) -> None:
    """nats-server checkStreamCfg on the subject_transforms of a source or of the mirror: valid source filters,
    destinations it can build a transform for, filters that do not overlap."""
    for tr in transforms:
        src = tr.get("src", "")
        if src and not is_valid_subject(src):
            err = f"invalid subject {src}"
            raise (js_error("JSMirrorInvalidSubjectFilter", err=err) if mirror
                   else js_error("JSSourceInvalidSubjectFilter", err=err))
        dest = tr.get("dest", "")
        if dest:
            try:
                validate_destination(dest)
                SubjectTransform(src, dest)
            except MappingError as e:
                raise (js_error("JSMirrorInvalidTransformDestination", err=str(e)) if mirror
                       else js_error("JSSourceInvalidTransformDestination", err=str(e))) from None
    filters = [tr.get("src") or ">" for tr in transforms]
    for i, a in enumerate(filters):
        if any(subjects_collide(a, b) for b in filters[i + 1:]):
            raise (js_error("JSMirrorOverlappingSubjectFilters") if mirror
                   else js_error("JSSourceOverlappingSubjectFilters"))


def source_transforms(src: dict[str, Any]) -> list[tuple[Filter, SubjectTransform | None]]:
    """A source's subject_transforms, built: (its filter, its transform, None for a filter without destination)."""
    return [(Filter(tr.get("src") or ">"), SubjectTransform(tr.get("src", ""), tr["dest"]) if tr.get("dest") else None)
            for tr in src.get("subject_transforms") or []]


def source_json(src: dict[str, Any]) -> dict[str, Any]:
    """A decoded StreamSource as nats-server writes it back (field order, omitempty, times as Go writes them)."""
    out: dict[str, Any] = {"name": src.get("name", "")}
    if src.get("opt_start_seq"):
        out["opt_start_seq"] = src["opt_start_seq"]
    if src.get("opt_start_time") is not None:
        out["opt_start_time"] = time_text(src["opt_start_time"])
    if src.get("filter_subject"):
        out["filter_subject"] = src["filter_subject"]
    if src.get("subject_transforms"):
        out["subject_transforms"] = [{"src": tr.get("src", ""), "dest": tr.get("dest", "")}
                                     for tr in src["subject_transforms"]]
    ext = src.get("external")
    if ext is not None:
        out["external"] = {"api": ext.get("api", ""), "deliver": ext.get("deliver", "")}
    return out


def source_iname(src: dict[str, Any]) -> str:
    """nats-server StreamSource.composeIName: `<name>[:<hash of the api prefix>] <filter> <destination>`, the key
    under which a stream tracks a source (and the first, third and fourth field of its Nats-Stream-Source header)."""
    iname = src.get("name", "")
    ext = src.get("external")
    if ext is not None:
        iname += ":" + go_hash(ext.get("api", ""))
    transforms = src.get("subject_transforms")
    if not transforms:
        return f"{iname} {src.get('filter_subject') or '>'} >"
    sources = "\f".join(tr.get("src") or ">" for tr in transforms)
    dests = "\f".join(tr.get("dest") or ">" for tr in transforms)
    return f"{iname} {sources} {dests}"


_HASH_DIGITS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def go_hash(name: str, size: int = 8) -> str:
    """nats-server getHash: the first `size` bytes of sha256(name), each as a base-62 digit."""
    digest = hashlib.sha256(name.encode()).digest()
    return "".join(_HASH_DIGITS[b % 62] for b in digest[:size])


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
    if cfg.get("mirror") != old.get("mirror"):
        # (nats-server 2.12 lets an update remove the mirror, promoting the stream; the hub does not)
        raise js_error("JSStreamMirrorNotUpdatableErr")
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

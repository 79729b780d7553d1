"""Consumer configs (nats-server `consumer.go` ConsumerConfig, setConsumerConfigDefaults, checkConsumerCfg): the JSON
schema as Go decodes it, the zero values and field order of its JSON, the defaults, and every check with
nats-server's error code and text. Pure functions of the config and the stream's config; no consumer state.
"""

from __future__ import annotations

import re
from typing import Any

from host.gotime import MS, NS, format_duration, time_text
from host.jetstream.errors import ApiError, js_error
from host.jetstream.gojson import (
    Enum,
    Struct,
    decode_request,
)
from host.jetstream.store import (
    ACK_ALL,
    ACK_EXPLICIT,
    ACK_NONE,
)
from host.jetstream.stream_config import MAX_DESCRIPTION_LEN, MAX_METADATA_LEN, is_valid_asset_name
from host.sublist import is_valid_subject

# Defaults and limits (nats-server consumer.go / jetstream_api.go).
ACK_WAIT_DEFAULT = 30 * NS
MAX_ACK_PENDING_DEFAULT = 1000
MAX_WAITING_DEFAULT = 512
MIN_HEARTBEAT = 100 * MS

DELIVER_POLICIES = ("all", "last", "new", "by_start_sequence", "by_start_time", "last_per_subject")
ACK_POLICIES = (ACK_NONE, ACK_ALL, ACK_EXPLICIT)
REPLAY_POLICIES = ("instant", "original")
PRIORITY_POLICIES = ("none", "overflow", "pinned_client", "prioritized")
_GROUP_NAME = re.compile(r"[a-zA-Z0-9/_=-]{1,16}")  # nats-server validGroupName


def is_valid_group_name(name: str) -> bool:
    return _GROUP_NAME.fullmatch(name) is not None


def subjects_overlap(a: str, b: str) -> bool:
    """Whether some literal subject matches both filters (nats-server subjectIsSubsetMatch in either direction)."""
    ta, tb = a.split("."), b.split(".")
    for i in range(max(len(ta), len(tb))):
        x = ta[i] if i < len(ta) else None
        y = tb[i] if i < len(tb) else None
        if x == ">" or y == ">":
            return x is not None and y is not None
        if x is None or y is None:
            return False
        if x != y and x != "*" and y != "*":
            return False
    return True


def is_subset(sub: str, sup: str) -> bool:
    """Every subject matching `sub` also matches `sup` (nats-server subjectIsSubsetMatch(sub, sup))."""
    ts, tp = sub.split("."), sup.split(".")
    for i, p in enumerate(tp):
        if p == ">":
            return len(ts) > i
        if i >= len(ts):
            return False
        s = ts[i]
        if s == ">":
            return False
        if p != "*" and (s == "*" or s != p):
            return False
    return len(ts) == len(tp)


# ConsumerConfig as Go decodes it (gojson.py).
CONFIG_SCHEMA: dict[str, Any] = {
    "durable_name": "string", "name": "string", "description": "string",
    "deliver_policy": Enum(*DELIVER_POLICIES, "undefined"), "opt_start_seq": "uint64", "opt_start_time": "time",
    "ack_policy": Enum(*ACK_POLICIES), "ack_wait": "duration", "max_deliver": "int", "backoff": "durations",
    "filter_subject": "string", "filter_subjects": "strings", "replay_policy": Enum(*REPLAY_POLICIES),
    "rate_limit_bps": "uint64", "sample_freq": "string", "max_waiting": "int", "max_ack_pending": "int",
    "flow_control": "bool", "headers_only": "bool", "max_batch": "int", "max_expires": "duration",
    "max_bytes": "int", "deliver_subject": "string", "deliver_group": "string", "idle_heartbeat": "duration",
    "inactive_threshold": "duration", "num_replicas": "int", "mem_storage": "bool", "direct": "bool",
    "sourcing": "bool", "metadata": "map", "pause_until": "time", "priority_groups": "strings",
    "priority_policy": Enum(*PRIORITY_POLICIES, unknown="unknown priority policy: "),
    "priority_timeout": "duration",
}
CREATE_SCHEMA: dict[str, Any] = {
    "stream_name": "string", "config": Struct("server.ConsumerConfig", CONFIG_SCHEMA),
    "action": Enum("", "create", "update", unknown="unknown consumer action: "), "pedantic": "bool",
}

# Output order and the zero values left out of the JSON (nats-server ConsumerConfig, `omitempty`).
_CONFIG_ORDER: tuple[tuple[str, bool], ...] = (
    ("durable_name", True), ("name", True), ("description", True), ("deliver_policy", False),
    ("opt_start_seq", True), ("opt_start_time", True), ("ack_policy", False), ("ack_wait", True),
    ("max_deliver", True), ("backoff", True), ("filter_subject", True), ("filter_subjects", True),
    ("replay_policy", False), ("rate_limit_bps", True), ("sample_freq", True), ("max_waiting", True),
    ("max_ack_pending", True), ("flow_control", True), ("headers_only", True), ("max_batch", True),
    ("max_expires", True), ("max_bytes", True), ("deliver_subject", True), ("deliver_group", True),
    ("idle_heartbeat", True), ("inactive_threshold", True), ("num_replicas", False), ("mem_storage", True),
    ("direct", True), ("sourcing", True), ("metadata", True), ("pause_until", True), ("priority_groups", True),
    ("priority_policy", True), ("priority_timeout", True),
)

_ZERO: dict[str, Any] = {
    "durable_name": "", "name": "", "description": "", "deliver_policy": "all", "opt_start_seq": 0,
    "opt_start_time": None, "ack_policy": ACK_NONE, "ack_wait": 0, "max_deliver": 0, "backoff": [],
    "filter_subject": "", "filter_subjects": [], "replay_policy": "instant", "rate_limit_bps": 0, "sample_freq": "",
    "max_waiting": 0, "max_ack_pending": 0, "flow_control": False, "headers_only": False, "max_batch": 0,
    "max_expires": 0, "max_bytes": 0, "deliver_subject": "", "deliver_group": "", "idle_heartbeat": 0,
    "inactive_threshold": 0, "num_replicas": 0, "mem_storage": False, "direct": False, "sourcing": False,
    "metadata": None, "pause_until": None, "priority_groups": [], "priority_policy": "none", "priority_timeout": 0,
}


def zero_config() -> dict[str, Any]:
    cfg = dict(_ZERO)
    cfg["backoff"] = []
    cfg["filter_subjects"] = []
    cfg["priority_groups"] = []
    return cfg


def config_from(decoded: dict[str, Any]) -> dict[str, Any]:
    """A full consumer config from the keys decoded with CONFIG_SCHEMA: the rest take Go's zero values (defaults
    come later, in `apply_defaults`)."""
    cfg = zero_config()
    cfg.update(decoded)
    if cfg["deliver_policy"] == "undefined":
        cfg["deliver_policy"] = "all"
    return cfg


def parse_create_request(payload: bytes) -> tuple[str, dict[str, Any], str, bool]:
    """CONSUMER.CREATE's body (nats-server CreateConsumerRequest): (stream_name, config, action, pedantic);
    ApiError 10025 with encoding/json's text."""
    req = decode_request(payload, CREATE_SCHEMA, "CreateConsumerRequest")
    return (req.get("stream_name", ""), config_from(req.get("config") or {}), req.get("action", ""),
            req.get("pedantic", False))


def config_json(cfg: dict[str, Any], metadata: dict[str, str] | None = None) -> dict[str, Any]:
    """The config as nats-server writes it: its field order, zero values left out, metadata keys sorted."""
    out: dict[str, Any] = {}
    for key, omit in _CONFIG_ORDER:
        v = cfg[key]
        if key == "metadata":
            v = metadata if metadata is not None else v
            if v:
                out[key] = {k: v[k] for k in sorted(v)}
            continue
        if key in ("opt_start_time", "pause_until"):
            if v is not None:
                out[key] = time_text(v)
            continue
        if omit and (v == _ZERO[key] or v is None or v == []):
            continue
        out[key] = v
    return out


def apply_defaults(cfg: dict[str, Any], stream_cfg: dict[str, Any], pedantic: bool,
                   acc_max_ack_pending: int = -1) -> None:
    """nats-server setConsumerConfigDefaults. In pedantic mode a value that would be changed is an error."""

    def pedantic_err(text: str) -> ApiError:
        return js_error("JSPedanticErrF", err=text)

    if cfg["max_deliver"] == 0 or cfg["max_deliver"] < -1:
        if pedantic and cfg["max_deliver"] < -1:
            raise pedantic_err("max_deliver must be set to -1")
        cfg["max_deliver"] = -1
    for key, name in (("max_waiting", "max_waiting"), ("max_batch", "max_batch"), ("max_expires", "max_expires"),
                      ("max_bytes", "max_bytes"), ("idle_heartbeat", "idle_heartbeat"),
                      ("inactive_threshold", "inactive_threshold"), ("priority_timeout", "priority_timeout")):
        if cfg[key] < 0:
            if pedantic:
                raise pedantic_err(f"{name} must not be negative")
            cfg[key] = 0
    if cfg["max_ack_pending"] < -1:
        if pedantic:
            raise pedantic_err("max_ack_pending must be set to -1")
        cfg["max_ack_pending"] = -1
    if not cfg["deliver_subject"] and cfg["max_waiting"] == 0:
        cfg["max_waiting"] = MAX_WAITING_DEFAULT
    if cfg["ack_wait"] == 0 and cfg["ack_policy"] in (ACK_EXPLICIT, ACK_ALL):
        cfg["ack_wait"] = ACK_WAIT_DEFAULT
    if cfg["backoff"]:
        if pedantic and cfg["ack_wait"] != cfg["backoff"][0]:
            raise pedantic_err("first backoff value has to equal batch AckWait")
        cfg["ack_wait"] = cfg["backoff"][0]
    limits = stream_cfg.get("consumer_limits") or {}
    lim_pending = int(limits.get("max_ack_pending") or 0)
    lim_inactive = int(limits.get("inactive_threshold") or 0)
    if cfg["max_ack_pending"] == 0:
        if pedantic and lim_pending > 0:
            raise pedantic_err("max_ack_pending must be set if it's configured in stream limits")
        cfg["max_ack_pending"] = lim_pending
    if cfg["inactive_threshold"] == 0:
        if pedantic and lim_inactive > 0:
            raise pedantic_err("inactive_threshold must be set if it's configured in stream limits")
        cfg["inactive_threshold"] = lim_inactive
    if cfg["max_ack_pending"] == 0 and cfg["ack_policy"] != ACK_NONE:
        # nats-server setConsumerConfigDefaults: the default, or the account's limit when that is lower
        cfg["max_ack_pending"] = min_positive(MAX_ACK_PENDING_DEFAULT, acc_max_ack_pending)
    if cfg["priority_policy"] == "pinned_client" and cfg["priority_timeout"] == 0:
        cfg["priority_timeout"] = 120 * NS


def filters_of(cfg: dict[str, Any]) -> list[str]:
    if cfg["filter_subject"]:
        return [cfg["filter_subject"]]
    return list(cfg["filter_subjects"])


def min_positive(a: int, b: int) -> int:
    """The lower of a limit and another that counts only when positive."""
    return b if 0 < b < a else a


def check_config(cfg: dict[str, Any], stream_cfg: dict[str, Any], acc_max_ack_pending: int = -1) -> None:
    """nats-server checkConsumerCfg: reject what cannot work, with its error codes and texts."""
    if cfg["name"] and not is_valid_asset_name(cfg["name"]):
        raise js_error("JSStreamInvalidConfigF", err="consumer name can not contain '.', '*', '>', '\\', '/'")
    if cfg["durable_name"] and not is_valid_asset_name(cfg["durable_name"]):
        raise js_error("JSStreamInvalidConfigF", err="consumer durable name can not contain '.', '*', '>', '\\', '/'")
    stream_replicas = int(stream_cfg.get("num_replicas") or 1)
    if cfg["num_replicas"] > 0 and cfg["num_replicas"] > stream_replicas:
        raise js_error("JSConsumerReplicasExceedsStream")
    if cfg["num_replicas"] < 0:
        raise js_error("JSReplicasCountCannotBeNegative")
    retention = stream_cfg.get("retention", "limits")
    if retention in ("interest", "workqueue") and cfg["num_replicas"] not in (0, stream_replicas):
        raise js_error("JSConsumerReplicasShouldMatchStream")
    if any(b < 0 for b in cfg["backoff"]):
        raise js_error("JSConsumerBackOffNegativeErr")
    if cfg["ack_wait"] < 0:
        raise js_error("JSConsumerAckWaitNegativeErr")
    if cfg["backoff"] and cfg["max_deliver"] != -1 and len(cfg["backoff"]) > cfg["max_deliver"]:
        raise js_error("JSConsumerMaxDeliverBackoffErr")
    if len(cfg["description"]) > MAX_DESCRIPTION_LEN:
        raise js_error("JSConsumerDescriptionTooLongErrF", max=MAX_DESCRIPTION_LEN)
    deliver = cfg["deliver_subject"]
    if deliver:
        toks = deliver.split(".")
        if "*" in toks or ">" in toks:
            raise js_error("JSConsumerDeliverToWildcardsErr")
        if not is_valid_subject(deliver.encode()):
            raise js_error("JSConsumerInvalidDeliverSubject")
        if any(is_subset(deliver, s) for s in stream_cfg.get("subjects") or []):
            raise js_error("JSConsumerDeliverCycleErr")
        if cfg["max_waiting"] != 0:
            raise js_error("JSConsumerPushMaxWaitingErr")
        if cfg["max_ack_pending"] > 0 and cfg["ack_policy"] == ACK_NONE:
            raise js_error("JSConsumerMaxPendingAckPolicyRequiredErr")
        if 0 < cfg["idle_heartbeat"] < MIN_HEARTBEAT:
            raise js_error("JSConsumerSmallHeartbeatErr")
    else:
        if cfg["ack_policy"] == ACK_NONE and retention == "workqueue":
            raise js_error("JSConsumerPullRequiresAckErr")
        if cfg["rate_limit_bps"] > 0:
            raise js_error("JSConsumerPullWithRateLimitErr")
        if cfg["max_waiting"] < 0:
            raise js_error("JSConsumerMaxWaitingNegativeErr")
        if cfg["idle_heartbeat"] > 0:
            raise js_error("JSConsumerHBRequiresPushErr")
        if cfg["flow_control"]:
            raise js_error("JSConsumerFCRequiresPushErr")
        if cfg["max_batch"] < 0:
            raise js_error("JSConsumerMaxRequestBatchNegativeErr")
        if cfg["max_expires"] != 0 and cfg["max_expires"] < MS:
            raise js_error("JSConsumerMaxRequestExpiresTooSmall")
    if acc_max_ack_pending > 0 and cfg["max_ack_pending"] > acc_max_ack_pending:
        raise js_error("JSConsumerMaxPendingAckExcessErrF", limit=acc_max_ack_pending)
    limits = stream_cfg.get("consumer_limits") or {}
    lim_pending = int(limits.get("max_ack_pending") or 0)
    if lim_pending > 0 and cfg["max_ack_pending"] > lim_pending:
        raise js_error("JSConsumerMaxPendingAckExcessErrF", limit=lim_pending)
    lim_inactive = int(limits.get("inactive_threshold") or 0)
    if lim_inactive > 0 and cfg["inactive_threshold"] > lim_inactive:
        raise js_error("JSConsumerInactiveThresholdExcess", limit=format_duration(lim_inactive))
    if cfg["direct"]:
        if not deliver:
            raise js_error("JSConsumerDirectRequiresPushErr")
        if cfg["durable_name"]:
            raise js_error("JSConsumerDirectRequiresEphemeralErr")
    if cfg["filter_subject"] and cfg["filter_subjects"]:
        raise js_error("JSConsumerDuplicateFilterSubjects")
    if cfg["filter_subject"] and not is_valid_subject(cfg["filter_subject"].encode()):
        raise js_error("JSStreamInvalidConfigF", err="invalid subject")
    if any(not f for f in cfg["filter_subjects"]):
        raise js_error("JSConsumerEmptyFilter")
    flts = filters_of(cfg)
    for i, f in enumerate(flts):
        if not is_valid_subject(f.encode()):
            raise js_error("JSStreamInvalidConfigF", err="invalid subject")
        for j, g in enumerate(flts):
            if i != j and is_subset(f, g):
                raise js_error("JSConsumerOverlappingSubjectFilters")
    _check_start(cfg)
    if cfg["sample_freq"]:
        text = cfg["sample_freq"].removesuffix("%")
        try:
            ok = int(text) >= 0 and text.strip() == text and "_" not in text
        except ValueError:
            ok = False
        if not ok:
            raise js_error("JSConsumerInvalidSamplingErrF",
                           err=f'strconv.Atoi: parsing "{text}": invalid syntax')
    if cfg["flow_control"] and cfg["idle_heartbeat"] == 0:
        raise js_error("JSConsumerWithFlowControlNeedsHeartbeats")
    if cfg["durable_name"] and cfg["name"] and cfg["name"] != cfg["durable_name"]:
        raise js_error("JSConsumerCreateDurableAndNameMismatch")
    md = cfg["metadata"] or {}
    if sum(len(k) + len(v) for k, v in md.items()) > MAX_METADATA_LEN:
        raise js_error("JSConsumerMetadataLengthErrF", limit=f"{MAX_METADATA_LEN // 1024}KB")
    if cfg["priority_policy"] != "none":
        if deliver:
            raise js_error("JSConsumerPushWithPriorityGroupErr")
        if not cfg["priority_groups"]:
            raise js_error("JSConsumerPriorityPolicyWithoutGroup")
        for g in cfg["priority_groups"]:
            if not g:
                raise js_error("JSConsumerEmptyGroupName")
            if not is_valid_group_name(g):
                raise js_error("JSConsumerInvalidGroupNameErr")
    elif cfg["priority_groups"]:
        raise js_error("JSConsumerPriorityGroupWithPolicyNone")
    elif cfg["priority_timeout"] > 0:
        raise js_error("JSConsumerPinnedTTLWithoutPriorityPolicyNone")


def _check_start(cfg: dict[str, Any]) -> None:
    dp, seq, t = cfg["deliver_policy"], cfg["opt_start_seq"], cfg["opt_start_time"] is not None

    def bad(text: str) -> ApiError:
        return js_error("JSConsumerInvalidPolicyErrF", err=text)

    def bad_start(p: str, start: str) -> ApiError:
        return bad(f"consumer delivery policy is deliver {p}, but optional start {start} is also set")

    def not_set(p: str, what: str) -> ApiError:
        return bad(f"consumer delivery policy is deliver {p}, but optional {what} is not set")

    names = {"all": "all", "last": "last", "last_per_subject": "last per subject", "new": "new"}
    if dp in names:
        if seq > 0:
            raise bad_start(names[dp], "sequence")
        if t:
            raise bad_start(names[dp], "time")
        if dp == "last_per_subject" and not filters_of(cfg):
            raise not_set("last per subject", "filter subject")
    elif dp == "by_start_sequence":
        if seq == 0:
            raise not_set("by start sequence", "start sequence")
        if t:
            raise bad_start("by start sequence", "time")
    elif dp == "by_start_time":
        if not t:
            raise not_set("by start time", "start time")
        if seq != 0:
            raise bad_start("by start time", "start sequence")


def update_error(old: dict[str, Any], new: dict[str, Any], deliver_has_interest: bool) -> ApiError | None:
    """nats-server checkNewConsumerConfig: what an update may not change (error 10012 with its text)."""
    if old == new:
        return None
    for key, text in (("deliver_policy", "deliver policy can not be updated"),
                      ("mem_storage", "storage type can not be updated"),
                      ("direct", "direct can not be updated"),
                      ("sourcing", "sourcing can not be updated"),
                      ("opt_start_seq", "start sequence can not be updated"),
                      ("opt_start_time", "start time can not be updated"),
                      ("ack_policy", "ack policy can not be updated"),
                      ("replay_policy", "replay policy can not be updated"),
                      ("idle_heartbeat", "heart beats can not be updated"),
                      ("flow_control", "flow control can not be updated")):
        if old[key] != new[key]:
            return js_error("JSConsumerCreateErrF", err=text)
    if old["deliver_subject"] != new["deliver_subject"]:
        if not old["deliver_subject"]:
            return js_error("JSConsumerCreateErrF", err="can not update pull consumer to push based")
        if not new["deliver_subject"]:
            return js_error("JSConsumerCreateErrF", err="can not update push consumer to pull based")
        if deliver_has_interest:
            return js_error("JSConsumerNameExistErr")
    if old["max_waiting"] != new["max_waiting"]:
        return js_error("JSConsumerCreateErrF", err="max waiting can not be updated")
    if new["backoff"] and new["max_deliver"] != -1 and len(new["backoff"]) > new["max_deliver"]:
        return js_error("JSConsumerMaxDeliverBackoffErr")
    return None

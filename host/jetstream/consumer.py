"""JetStream consumers of the hub (nats-server `consumer.go`, in spirit): the `$JS.API.CONSUMER.>` requests, pull and
push delivery, acknowledgements, redelivery, flow control, heartbeats, pause, and durable state on disk.

How it fits (docs in notes/js-contract.md):
- api.py routes every `$JS.API.CONSUMER.>` request to `consumer_api()`; jetstream.py calls `install(jsa)` when an
  account's JetStream starts (acks and flow-control replies arrive on `$JS.ACK.>` / `$JS.FC.>` subscriptions made
  there) and `recover(stream)` after opening a stream from disk. The stream tells each consumer about new messages
  (`on_msg`), removals (`on_purge`), shutdown (`stop`) and stream deletion (`delete`).
- Everything runs on the hub's event loop, synchronously: a publish stored by the stream is delivered to a waiting
  pull request or a push subscriber inside the same read batch; timers (ack wait, expiry of pull requests,
  heartbeats, inactivity, pause) come from `loop.call_later`, and flush what they queued themselves.

The model follows nats-server's consumer: `sseq` is the next stream sequence to look at, `dseq` the next delivery
(consumer) sequence, `pending` maps stream sequences delivered but not acknowledged to their first delivery sequence
and delivery time, `rdc` counts redeliveries, `rdq` queues messages to redeliver, and the ack floors (`adflr`,
`asflr`) are the highest sequences below which everything is acknowledged. `npc` is the running count of matching
messages not yet delivered (num_pending), computed from the store when the position jumps and then kept up to date
per message, so no delivery scans the stream.

Wire details are nats-server 2.15.1's (vectors/js/19-27, 35-37 and the live comparisons in tests/unit and
tests/compat): v1 ack subjects `$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>`, status-only
messages with `Nats-Pending-Messages`/`Nats-Pending-Bytes`, `Nats-Last-Consumer`/`Nats-Last-Stream`, and the API's
JSON shapes, defaults and error codes.

Not served: priority groups (ADR-42: overflow, pinned clients, prioritized; a config asking for them is refused
with 10052) and CONSUMER.UNPIN; pull requests whose reply crosses a service import (the requester's interest is
looked up in the consumer's own account only).
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import time
import weakref
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from edge.proto import encode_tail
from host.accounts import Account, nuid
from host.gotime import MS, NS, format_duration, parse_duration, rfc3339, time_text
from host.headers import hdr_append, status_header
from host.jetstream.errors import ApiError, js_error
from host.jetstream.gojson import (
    Enum,
    GoJSONError,
    Struct,
    decode,
    decode_request,
    dumps,
    is_empty_request,
    is_json_object_or_array,
    loads,
)
from host.jetstream.memstore import ConsumerMemStore
from host.jetstream.store import (
    ACK_ALL,
    ACK_EXPLICIT,
    ACK_NONE,
    ConsumerState,
    ConsumerStore,
    ErrStoreEOF,
    Filter,
    SequencePair,
    StoreError,
    next_pending,
)
from host.jetstream.store import Pending as StorePending
from host.jetstream.versioning import api_level_too_high, dynamic_metadata, set_static_consumer_metadata
from host.sublist import is_valid_subject, subject_matches

if TYPE_CHECKING:
    import asyncio

    from host.jetstream.jetstream import JSAccount

log = logging.getLogger("natsedge.hub")

INT64_MAX = (1 << 63) - 1
INT64_MIN = -(1 << 63)

# Defaults and limits (nats-server consumer.go / jetstream_api.go).
ACK_WAIT_DEFAULT = 30 * NS
DELETE_WAIT_DEFAULT = 5 * NS  # inactive_threshold of an ephemeral that did not set one
MAX_ACK_PENDING_DEFAULT = 1000
MAX_WAITING_DEFAULT = 512
FC_MAX_PENDING = 32 * 1024 * 1024  # flow control window limit; the window starts at 1/16 of it
ACK_WAIT_SLACK = MS  # the ack timer fires this much after a deadline, so bursts are handled together
NAMES_LIMIT = 1024
LIST_LIMIT = 256
MAX_NAME_LEN = 255
MAX_DESCRIPTION_LEN = 4 * 1024
MAX_METADATA_LEN = 128 * 1024
MIN_HEARTBEAT = 100 * MS
WAITING_CHECK_INTERVAL = NS  # at most one sweep of a full waiting queue per second
FLUSH_DELAY = 1.0  # seconds between a state change and its write to disk (file-backed durables)
INTEREST_CLEANUP_MAX = 100_000  # messages checked when a consumer of an interest stream goes away

# Ack payloads.
ACK_ACK = b"+ACK"
ACK_OK = b"+OK"
ACK_NAK = b"-NAK"
ACK_PROGRESS = b"+WPI"
ACK_NEXT = b"+NXT"
ACK_TERM = b"+TERM"
TERM_REASON_REMOVED = "Unacknowledged message was deleted"

# Headers.
HDR_PENDING_MSGS = "Nats-Pending-Messages"
HDR_PENDING_BYTES = "Nats-Pending-Bytes"
HDR_LAST_CONSUMER = "Nats-Last-Consumer"
HDR_LAST_STREAM = "Nats-Last-Stream"
HDR_STALLED = "Nats-Consumer-Stalled"
HDR_MSG_SIZE = b"Nats-Msg-Size"

# Advisories and metrics.
ADV_PREFIX = "$JS.EVENT.ADVISORY.CONSUMER."
ADV_CREATED = ADV_PREFIX + "CREATED"
ADV_DELETED = ADV_PREFIX + "DELETED"
ADV_PAUSE = ADV_PREFIX + "PAUSE"
ADV_MAX_DELIVERIES = ADV_PREFIX + "MAX_DELIVERIES"
ADV_NAKED = ADV_PREFIX + "MSG_NAKED"
ADV_TERMINATED = ADV_PREFIX + "MSG_TERMINATED"
METRIC_ACK = "$JS.EVENT.METRIC.CONSUMER.ACK"

# API response types.
T_CREATE = "io.nats.jetstream.api.v1.consumer_create_response"
T_INFO = "io.nats.jetstream.api.v1.consumer_info_response"
T_NAMES = "io.nats.jetstream.api.v1.consumer_names_response"
T_LIST = "io.nats.jetstream.api.v1.consumer_list_response"
T_DELETE = "io.nats.jetstream.api.v1.consumer_delete_response"
T_PAUSE = "io.nats.jetstream.api.v1.consumer_pause_response"
T_RESET = "io.nats.jetstream.api.v1.consumer_reset_response"
T_STEPDOWN = "io.nats.jetstream.api.v1.consumer_leader_stepdown_response"

DELIVER_POLICIES = ("all", "last", "new", "by_start_sequence", "by_start_time", "last_per_subject")
ACK_POLICIES = (ACK_NONE, ACK_ALL, ACK_EXPLICIT)
REPLAY_POLICIES = ("instant", "original")
PRIORITY_POLICIES = ("none", "overflow", "pinned_client", "prioritized")

_NAME_FORBIDDEN = frozenset(" \t\r\n\f.*>\\/")
_B62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


# ---- small formatting helpers ----------------------------------------------------------------------------------------


def _ephemeral_name() -> str:
    return "".join(_B62[b % 62] for b in os.urandom(8))


def valid_name(name: str) -> bool:
    """nats-server isValidAssetName: no whitespace, '.', '*', '>' or path separators."""
    return bool(name) and not (set(name) & _NAME_FORBIDDEN)


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


def apply_defaults(cfg: dict[str, Any], stream_cfg: dict[str, Any], pedantic: bool) -> None:
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
        cfg["max_ack_pending"] = MAX_ACK_PENDING_DEFAULT
    if cfg["priority_policy"] == "pinned_client" and cfg["priority_timeout"] == 0:
        cfg["priority_timeout"] = 120 * NS


def filters_of(cfg: dict[str, Any]) -> list[str]:
    if cfg["filter_subject"]:
        return [cfg["filter_subject"]]
    return list(cfg["filter_subjects"])


def check_config(cfg: dict[str, Any], stream_cfg: dict[str, Any]) -> None:
    """nats-server checkConsumerCfg: reject what cannot work, with its error codes and texts."""
    if cfg["name"] and not valid_name(cfg["name"]):
        raise js_error("JSStreamInvalidConfigF", err="consumer name can not contain '.', '*', '>', '\\', '/'")
    if cfg["durable_name"] and not valid_name(cfg["durable_name"]):
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
        # Priority groups (ADR-42: overflow, pinned clients, prioritized) are not implemented by this hub.
        raise js_error("JSStreamInvalidConfigF", err="consumer priority groups are not supported by this server")
    if cfg["priority_groups"]:
        raise js_error("JSConsumerPriorityGroupWithPolicyNone")
    if cfg["priority_timeout"] > 0:
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


# ---- pull requests -----------------------------------------------------------------------------------------------

NEXT_SCHEMA = {"expires": "duration", "batch": "int", "max_bytes": "int", "no_wait": "bool",
               "idle_heartbeat": "duration", "group": "string", "min_pending": "int64",
               "min_ack_pending": "int64", "id": "string", "priority": "int"}


class NextRequest:
    """A parsed MSG.NEXT body (nats-server nextReqFromMsg): empty = batch 1 waiting for ever, a number = batch,
    JSON = {"batch", "expires", "max_bytes", "no_wait", "idle_heartbeat", priority keys}."""

    __slots__ = ("batch", "expires", "max_bytes", "no_wait", "heartbeat", "group")

    def __init__(self, batch: int = 1, expires: int = 0, max_bytes: int = 0, no_wait: bool = False,
                 heartbeat: int = 0, group: dict[str, Any] | None = None) -> None:
        self.batch = batch
        self.expires = expires
        self.max_bytes = max_bytes
        self.no_wait = no_wait
        self.heartbeat = heartbeat
        self.group = group


def parse_next_request(payload: bytes) -> NextRequest:
    """ValueError(text) for a bad request, sent back as `400 Bad Request - <text>`."""
    body = payload.strip()
    if not body:
        return NextRequest()
    if body[:1] == b"{":
        try:
            vals = decode(loads(body), NEXT_SCHEMA, "JSApiConsumerGetNextRequest", strict=False)
        except GoJSONError as e:
            raise ValueError(str(e).rsplit(" at offset", 1)[0]) from None
        req = NextRequest(vals.get("batch", 0), vals.get("expires", 0), vals.get("max_bytes", 0),
                          vals.get("no_wait", False), vals.get("idle_heartbeat", 0))
        group = {k: vals[k] for k in ("group", "min_pending", "min_ack_pending", "id", "priority") if vals.get(k)}
        req.group = group or None
        if req.heartbeat > 0 and req.heartbeat * 2 > req.expires:
            raise ValueError("heartbeat value too large")
        return req
    try:
        return NextRequest(batch=int(body.decode()))
    except (ValueError, UnicodeDecodeError):
        return NextRequest()


class WaitingRequest:
    """A pull request waiting for messages: `n` left of its batch, `b` bytes left (0 = no limit), `d` delivered."""

    __slots__ = ("reply", "n", "d", "b", "expires", "received", "hb", "hbt", "no_wait")

    def __init__(self, reply: bytes, req: NextRequest, now: int) -> None:
        self.reply = reply
        self.n = req.batch
        self.d = 0
        self.b = req.max_bytes
        # A negative expiry is already over (nats-server adds it to the current time): answered 408 at once.
        self.expires = now + req.expires if req.expires else 0
        self.received = now
        self.hb = req.heartbeat
        self.hbt = now + req.heartbeat if req.heartbeat > 0 else 0
        self.no_wait = req.no_wait


# ---- ack subjects --------------------------------------------------------------------------------------------------


def parse_ack_subject(subject: str) -> tuple[str, str, int, int, int, int, int] | None:
    """(stream, consumer, delivered count, stream seq, consumer seq, ts, pending) of a v1 (9 tokens) or v2 (11+
    tokens) ack subject; None when the layout or a number is wrong (nats-server ackReplyInfo). A `@<subject>`
    suffix, added when a delivery crossed a leaf link, is ignored."""
    at = subject.find("@")
    if at >= 0:
        subject = subject[:at]
    toks = subject.split(".")
    n = len(toks)
    if (n != 9 and n < 11) or toks[0] != "$JS" or toks[1] != "ACK":
        return None
    off = 2 if n == 9 else 4
    nums = toks[off + 2: off + 7]
    if not all(t.isdigit() and t.isascii() for t in nums):
        return None
    dc, sseq, dseq, ts, pending = (int(t) for t in nums)
    return toks[off], toks[off + 1], dc, sseq, dseq, ts, pending


def parse_nak_delay(arg: bytes) -> int | None:
    """The delay of `-NAK {"delay": ns}` or `-NAK <Go duration>`; None when absent or unreadable."""
    arg = arg.strip()
    if not arg:
        return None
    if arg[:1] == b"{":
        try:
            obj = json.loads(arg)
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
            return None
        if not isinstance(obj, dict):
            return None
        d = obj.get("delay", 0)
        if isinstance(d, bool) or not isinstance(d, int) or not INT64_MIN <= d <= INT64_MAX:
            return None  # not a Go time.Duration: a plain NAK, as nats-server
        return d
    try:
        return parse_duration(arg.decode())
    except (ValueError, UnicodeDecodeError):
        return None


# ---- delivery to subscribers ---------------------------------------------------------------------------------------


def deliver_frame(server: Any, acc: Account, dest: bytes, subject: bytes, reply: bytes | None,
                  hdr: bytes | None, payload: bytes) -> int:
    """Send one message to the subscribers of `dest` in `acc`, written as `subject`: the MSG line shows the stored
    message's subject while the frame goes to the inbox or deliver subject's subscriptions (nats-server's
    "deliver" subject). Leaf links get the routed subject with `@<subject>` after the reply, which nats-server
    peers map back. Internal subscriptions are skipped. Returns how many targets got it."""
    r = acc.sublist.match(dest)
    if not r:
        return 0
    size = len(payload) + (len(hdr) if hdr is not None else 0)
    count = 0
    leafs: set[Any] = set()
    for sub in r.psubs:
        conn = sub.conn
        if sub.imported is not None or conn is None:
            continue
        if conn.is_leaf:
            if conn not in leafs and not conn.closed:
                leafs.add(conn)
                conn.send_lmsg(dest, _leaf_reply(reply, subject, dest), [], hdr, payload)
                count += 1
            continue
        count += _frame_to(conn, sub, subject, reply, hdr, payload, size)
    for grp in r.qsubs:
        members = [s for s in grp if s.imported is None and s.conn is not None and not s.conn.closed]
        if not members:
            continue
        sub = members[random.randrange(len(members))]
        conn = sub.conn
        if conn.is_leaf:
            conn.send_lmsg(dest, _leaf_reply(reply, subject, dest), [sub.queue], hdr, payload)
            count += 1
        else:
            count += _frame_to(conn, sub, subject, reply, hdr, payload, size)
    if count:
        server.out_msgs += count
        server.out_bytes += size * count
    return count


def _leaf_reply(reply: bytes | None, subject: bytes, dest: bytes) -> bytes | None:
    if reply and subject != dest:
        return reply + b"@" + subject
    return reply


def _frame_to(conn: Any, sub: Any, subject: bytes, reply: bytes | None, hdr: bytes | None, payload: bytes,
              size: int) -> int:
    if conn.closed or sub.closed:
        return 0
    if sub.max is not None and sub.delivered >= sub.max:
        conn.remove_sub(sub)
        return 0
    if hdr is not None and not conn.headers:
        hdr = None  # nats-server strips headers for clients that did not announce support
        size = len(payload)
    verb = b"HMSG " if hdr is not None else b"MSG "
    conn.enqueue(verb + subject + b" " + sub.sid + encode_tail(reply, hdr, payload))
    conn.out_msgs += 1
    conn.out_bytes += size
    sub.delivered += 1
    if sub.max is not None and sub.delivered >= sub.max:
        conn.remove_sub(sub)
    return 1


def has_interest(acc: Account, subject: bytes) -> bool:
    r = acc.sublist.match(subject)
    return bool(r.psubs) or any(r.qsubs)


def headers_only(hdr: bytes | None, payload: bytes) -> bytes:
    """The headers of a `headers_only` delivery: the stored headers plus `Nats-Msg-Size: <payload length>`."""
    return hdr_append(hdr, HDR_MSG_SIZE + b": %d\r\n" % len(payload))


# ---- the consumer ---------------------------------------------------------------------------------------------------


class Pending:
    """A delivered message awaiting its ack: its first delivery sequence and when it was (re)delivered (ns)."""

    __slots__ = ("dseq", "ts")

    def __init__(self, dseq: int, ts: int) -> None:
        self.dseq = dseq
        self.ts = ts


class Consumer:
    """One consumer of a stream. See the module docstring for the model; method names follow nats-server's."""

    def __init__(self, stream: Any, name: str, cfg: dict[str, Any], created: int) -> None:
        self.stream = stream
        self.jsa: JSAccount = stream.jsa
        self.account: Account = self.jsa.account
        self.server = self.jsa.server
        self.name = name
        self.cfg = cfg
        self.created = created
        self.closed = False
        self.durable = bool(cfg["durable_name"])
        self.push = bool(cfg["deliver_subject"])
        self.deliver_b = cfg["deliver_subject"].encode()
        self.ack_prefix = f"$JS.ACK.{stream.name}.{name}.".encode()
        self.fc_prefix = f"$JS.FC.{stream.name}.{name}."
        self.store: ConsumerStore = ConsumerMemStore(name, cfg["ack_policy"], cfg["max_deliver"])
        self.file_backed = False
        self._set_filters()
        # Position and ack state.
        self.sseq = 1
        self.dseq = 1
        self.adflr = 0
        self.asflr = 0
        self.pending: dict[int, Pending] = {}
        self.rdc: dict[int, int] = {}
        self.rdq: deque[int] = deque()
        self.rdq_set: set[int] = set()
        self.lss: deque[int] | None = None  # last_per_subject start: the sequences still to deliver first
        self.lss_resume = 0
        self.npc = 0
        self.npf = 0
        self.ldt = 0  # last delivery (ns), for info
        self.lat = 0  # last ack (ns), for info
        # Pull.
        self.waiting: deque[WaitingRequest] = deque()
        self.waiting_last = 0  # monotonic ns of the last request / delivery (inactivity)
        self.last_waiting_check = 0
        # Push.
        self.active = False
        self.pbytes = 0
        self.maxpb = 0
        self.pblimit = 0
        self.fcid = ""
        self.fcsz = 0
        if cfg["flow_control"]:
            self.pblimit = FC_MAX_PENDING
            self.maxpb = max(FC_MAX_PENDING // 16, 1)
        # Timers.
        self._ack_timer: asyncio.TimerHandle | None = None
        self._ack_timer_end = 0  # monotonic ns
        self._delete_timer: asyncio.TimerHandle | None = None
        self._hb_timer: asyncio.TimerHandle | None = None
        self._last_activity = 0  # monotonic ns of the last push delivery (idle heartbeats)
        self._wait_timer: asyncio.TimerHandle | None = None
        self._wait_timer_at = 0
        self._pause_timer: asyncio.TimerHandle | None = None
        self._pace_timer: asyncio.TimerHandle | None = None
        self._flush_timer: asyncio.TimerHandle | None = None
        # Replay "original" and rate limits pace deliveries.
        self.replay = cfg["replay_policy"] == "original"
        self._replay_lseq = 0
        self._replay_lts = 0
        self._replay_wall = 0
        self._rate_next = 0
        self.dthresh = 0
        self._set_inactive_threshold()
        self._kicking = False
        self._kick_again = False

    # -- configuration

    def _set_filters(self) -> None:
        self.filters = filters_of(self.cfg)
        self.compiled = [Filter(f) for f in self.filters]
        self.maxdc = max(self.cfg["max_deliver"], 0)
        self.maxp = self.cfg["max_ack_pending"]
        freq = self.cfg["sample_freq"].removesuffix("%")
        self.sample_freq = int(freq) if freq.isdigit() else 0
        self._set_scan_filter()

    def _set_scan_filter(self) -> None:
        """The filter the store walks with: none when ours covers every stream subject (nats-server isFiltered),
        which spares the store a subject match per message."""
        subjects = self.stream.config.get("subjects") or []
        if len(self.filters) == 1 and subjects and all(is_subset(s, self.filters[0]) for s in subjects):
            self.scan_filter = ""
        else:
            self.scan_filter = self.filters[0] if len(self.filters) == 1 else ""

    def _set_inactive_threshold(self) -> None:
        """nats-server updateInactiveThreshold: ephemerals always expire (5 s unless set); pull consumers get up to
        a second of jitter so many do not expire at once."""
        cfg = self.cfg
        jitter = 100 * MS + random.randrange(900) * MS
        if not self.durable and cfg["inactive_threshold"] <= 0:
            self.dthresh = DELETE_WAIT_DEFAULT + jitter
            cfg["inactive_threshold"] = DELETE_WAIT_DEFAULT
        elif cfg["inactive_threshold"] > 0:
            self.dthresh = cfg["inactive_threshold"] + (jitter if not self.push else 0)
        else:
            self.dthresh = 0

    def matches(self, subject: str) -> bool:
        compiled = self.compiled
        if not compiled:
            return True
        for f in compiled:
            if f.match(subject):
                return True
        return False

    # -- start

    def select_start(self) -> None:
        """nats-server selectStartingSeqNo: where a new consumer starts, per deliver policy."""
        cfg = self.cfg
        store = self.stream.store
        st = store.state()
        first, last = st.first_seq, st.last_seq
        dp = cfg["deliver_policy"]
        if cfg["opt_start_seq"]:
            self.sseq = cfg["opt_start_seq"]
        elif dp == "all":
            self.sseq = first
        elif dp == "last":
            if not self.filters:
                self.sseq = last
            else:
                self.sseq = max(store.filtered_state(1, f).last for f in self.filters)
        elif dp == "last_per_subject":
            if int(self.stream.config.get("max_msgs_per_subject") or 0) == 1:
                self.sseq = first
            else:
                seqs = store.multi_last_seqs(self.filters or [">"])
                self.lss = deque(seqs)
                self.lss_resume = last
                self.sseq = seqs[0] if seqs else last
        elif dp == "by_start_time":
            self.sseq = store.get_seq_from_time(cfg["opt_start_time"] or 0)
            if self.filters:
                nseq = last
                for f in self.filters:
                    ss = store.filtered_state(first, f)
                    if self.sseq <= ss.first < nseq:
                        nseq = ss.first
                if self.sseq < nseq < last:
                    self.sseq = nseq
        else:  # new
            self.sseq = last + 1
        if first == 0 and cfg["opt_start_seq"] == 0:
            self.sseq = 1
        elif self.sseq > last and cfg["opt_start_seq"] == 0:
            self.sseq = last + 1
        elif self.sseq < first:
            self.sseq = first
        if self.lss is not None and not self.lss:
            self.lss = None
        self.dseq = 1
        self.adflr = 0
        self.asflr = self.sseq - 1
        if self.sseq > 0:
            self.store.set_starting(self.sseq - 1)

    def apply_state(self, state: ConsumerState) -> None:
        """Resume from stored state (recovery): positions after the last delivery, pending acks re-armed."""
        self.sseq = state.delivered.stream_seq + 1
        self.dseq = state.delivered.consumer_seq + 1
        self.adflr = state.ack_floor.consumer_seq
        self.asflr = state.ack_floor.stream_seq
        self.pending = {s: Pending(p.seq, p.ts) for s, p in state.pending.items()}
        self.rdc = dict(state.redelivered)
        last = self.stream.store.state().last_seq
        if last < self.sseq - 1:
            # The stream lost messages the consumer had seen (nats-server reconcileStateWithStream).
            log.warning("JetStream consumer '%s > %s > %s' delivered sequence %d past last stream sequence of %d",
                        self.account.name, self.stream.name, self.name, self.sseq - 1, last)
            if self.asflr > last:
                self.asflr = last
                self.adflr = max(self.dseq - 1, 0)
                self.pending.clear()
                self.rdc.clear()
            for s in [s for s in self.pending if s > last]:
                del self.pending[s]
            for s in [s for s in self.rdc if s > last]:
                del self.rdc[s]
            if not self.pending:
                self.sseq, self.dseq = self.asflr + 1, self.adflr + 1
            else:
                self.sseq = max(self.pending) + 1
                self.dseq = max(p.dseq for p in self.pending.values()) + 1

    def start(self) -> None:
        """Arm what runs on its own: num_pending, the ack timer, interest tracking, inactivity, pause."""
        self.calc_num_pending()
        if self.pending:
            self._arm_ack_timer(0)
        if self.push:
            self.active = has_interest(self.account, self.deliver_b)
            if self.cfg["idle_heartbeat"]:
                self._last_activity = time.monotonic_ns()
                self._hb_timer = self.jsa.call_later(self.cfg["idle_heartbeat"] / NS, self._heartbeat_due)
        self.waiting_last = time.monotonic_ns()
        if self.dthresh > 0 and (not self.push or not self.active):
            self._delete_timer = self.jsa.call_later(self.dthresh / NS, self._delete_if_inactive)
        self._arm_pause()
        if self.replay:
            self._replay_lseq = self.stream.store.state().last_seq

    # -- num pending

    def calc_num_pending(self) -> None:
        """num_pending from the store (nats-server streamNumPending): matching messages at or after sseq; with
        deliver last_per_subject only each subject's last one."""
        store = self.stream.store
        lps = self.cfg["deliver_policy"] == "last_per_subject"
        if self.filters:
            n = sum(store.num_pending(self.sseq, f, lps) for f in self.filters)
        else:
            n = store.num_pending(self.sseq, "", lps)
        self.npc = n
        self.npf = store.state().last_seq

    def num_pending(self) -> int:
        return self.npc if self.npc > 0 else 0

    def _checked_num_pending(self) -> int:
        """nats-server checkNumPending: never report more than the stream can still hold for us."""
        st = self.stream.store.state()
        if self.sseq > st.last_seq:
            self.npc = 0
        elif self.npc > 0:
            self.npc = min(self.npc, st.msgs, st.last_seq - self.sseq + 1)
        return self.num_pending()

    # -- contract with the stream

    def on_msg(self, seq: int, subject: str) -> None:
        """A message was stored in the stream (in sequence order)."""
        if self.closed or not self.matches(subject):
            return
        if seq > self.npf:
            self.npc += 1
        if seq < self.sseq:
            return
        if (self.push and self.active) or (not self.push and self.waiting):
            self.kick()

    def on_purge(self) -> None:
        """Messages left the stream (purge, rollup, delete, compaction, expiry): move past what is gone, drop
        pending entries whose message is gone, recount num_pending (nats-server purge + decStreamPending)."""
        if self.closed:
            return
        self._set_scan_filter()  # a stream update may have changed its subjects
        store = self.stream.store
        st = store.state()
        before = (self.sseq, self.dseq, self.adflr, self.asflr, len(self.pending), len(self.rdc))
        first = st.first_seq if st.msgs else st.last_seq + 1
        if self.sseq < first:
            self.sseq = first
        if self.lss is not None:
            while self.lss and self.lss[0] < first:
                self.lss.popleft()
            if not self.lss:
                self.lss = None
                self.sseq = max(self.sseq, self.lss_resume + 1)
        gone = [s for s in self.pending if s < first or not self._stored(s)]
        for s in sorted(gone):
            p = self.pending.pop(s)
            self.rdc.pop(s, None)
            self._rdq_remove(s)
            self._store_acks(p.dseq, s)
            self._advisory(f"{ADV_TERMINATED}.{self.stream.name}.{self.name}", {
                "type": "io.nats.jetstream.advisory.v1.terminated", "stream": self.stream.name,
                "consumer": self.name, "consumer_seq": p.dseq, "stream_seq": s, "deliveries": self._dc(s),
                "reason": TERM_REASON_REMOVED})
        for s in [s for s in self.rdc if s < first]:
            del self.rdc[s]
        if self.asflr < first - 1:
            self.asflr = first - 1
        if self.rdq:
            keep = [s for s in self.rdq if self._stored(s)]
            self.rdq = deque(keep)
            self.rdq_set = set(keep)
        if not self.pending:
            self.adflr, self.asflr = self.dseq - 1, max(self.asflr, self.sseq - 1)
        elif gone:
            self._move_floor_after_removal()
        if (self.sseq, self.dseq, self.adflr, self.asflr, len(self.pending), len(self.rdc)) != before:
            self._write_state()
        self.calc_num_pending()
        self.kick()

    def _write_state(self) -> None:
        """Store the whole position (nats-server writeStoreState): after a purge the delivered and ack floors
        jump past what is gone, which per-message updates do not express."""
        state = ConsumerState(SequencePair(max(self.dseq - 1, 0), max(self.sseq - 1, 0)),
                              SequencePair(self.adflr, self.asflr),
                              {s: StorePending(p.dseq, p.ts) for s, p in self.pending.items()}, dict(self.rdc))
        try:
            self.store.update(state)
        except (StoreError, ValueError) as e:
            log.warning("JetStream consumer '%s > %s > %s': state not stored: %s", self.account.name,
                        self.stream.name, self.name, e)
        self._schedule_flush()

    def _stored(self, seq: int) -> bool:
        try:
            self.stream.store.subject_for_seq(seq)
        except StoreError:
            return False
        return True

    def _move_floor_after_removal(self) -> None:
        low = min(self.pending)
        p = self.pending[low]
        if p.dseq - 1 > self.adflr:
            self.adflr = p.dseq - 1
        if low - 1 > self.asflr:
            self.asflr = low - 1

    def needs(self, seq: int, subject: str) -> bool:
        """Interest retention: does this consumer still need stream message `seq` (nats-server needAck)?"""
        if self.closed or not self.matches(subject):
            return False
        if self.cfg["ack_policy"] == ACK_EXPLICIT:
            need = seq > self.asflr and (seq >= self.sseq or seq in self.pending)
        else:
            need = seq > self.asflr
        return need or seq in self.rdc

    # -- the delivery loop

    def kick(self) -> None:
        """Deliver whatever can be delivered now (nats-server loopAndGatherMsgs, run to completion)."""
        if self.closed:
            return
        if self._kicking:
            self._kick_again = True
            return
        self._kicking = True
        try:
            while True:
                self._kick_again = False
                reason = self._deliver_loop()
                if not self.push:
                    self._process_waiting(reason != "max_ack_pending")
                    self._arm_wait_timer()
                if not self._kick_again or self.closed:
                    break
        finally:
            self._kicking = False
        self._flush()

    def _paused(self) -> bool:
        pu = self.cfg["pause_until"]
        return pu is not None and time.time_ns() < pu

    def _deliver_loop(self) -> str:
        """Deliver until something stops it; returns why ("eof", "max_ack_pending", "blocked")."""
        push = self.push
        while not self.closed:
            if self._paused():
                return "blocked"
            if push:
                if not self.active or (self.maxpb > 0 and self.pbytes > self.maxpb):
                    return "blocked"
            elif not self.waiting:
                return "blocked"
            nxt = self._next_msg()
            if isinstance(nxt, str):
                return nxt
            sm, dc, source = nxt
            if dc == 1:
                self.npc -= 1
            seq = sm.seq
            hdr = sm.hdr
            data = sm.data
            if self.cfg["headers_only"]:
                hdr = headers_only(hdr, data)
                data = b""
            ack = self.ack_prefix + b"%d.%d.%d.%d.%d" % (dc, seq, self.dseq, sm.ts, self.num_pending())
            subj = sm.subject.encode()
            size = len(subj) + len(ack) + (len(hdr) if hdr else 0) + len(data)
            if (self.replay or self.cfg["rate_limit_bps"]) and not self._paced(sm.ts, size):
                self._undo(seq, dc, source)
                return "blocked"
            wr = None
            if push:
                dest = self.deliver_b
            else:
                wr = self._next_waiting(size)
                if wr is None:
                    self._undo(seq, dc, source)
                    return "blocked"
                dest = wr.reply
            if deliver_frame(self.server, self.account, dest, subj, ack, hdr or None, data) == 0:
                self._undo(seq, dc, source)
                if push:
                    self.active = False
                    self._interest_lost()
                    return "blocked"
                continue
            self._delivered(seq, dc, sm.ts, size + len(dest) - len(subj))
            if wr is not None:
                if wr.n > 0 and wr.hb > 0:
                    wr.hbt = time.monotonic_ns() + wr.hb
                if wr.n <= 0 and wr.b > 0:
                    deliver_frame(self.server, self.account, dest, dest, None,
                                  status_header(409, "Batch Completed", (HDR_PENDING_MSGS, wr.n),
                                                (HDR_PENDING_BYTES, wr.b)), b"")
        return "blocked"

    def _next_msg(self) -> tuple[Any, int, str] | str:
        """The next message to deliver and its delivery count (nats-server getNextMsg): redeliveries first, then
        (unless max_ack_pending is reached) the last_per_subject start list, then the next matching message."""
        store = self.stream.store
        while self.rdq:
            seq = self.rdq.popleft()
            self.rdq_set.discard(seq)
            dc = self.rdc.get(seq, 0) + 2
            if self.maxdc and dc > self.maxdc:
                if dc == self.maxdc + 1:
                    self._max_deliveries_advisory(seq, dc - 1)
                p = self.pending.pop(seq, None)
                self.rdc[seq] = dc - 1
                if p is not None:
                    self.store.update_delivered(p.dseq, seq, dc, p.ts)
                    self._move_ack_floor(p.dseq, seq)
                continue
            try:
                sm = store.load_msg(seq)
            except StoreError:
                p = self.pending.get(seq)
                if p is not None:
                    self._term(seq, p.dseq, dc - 1, TERM_REASON_REMOVED)
                continue
            return sm, dc, "rdq"
        if self.maxp > 0 and len(self.pending) >= self.maxp:
            return "max_ack_pending"
        while self.lss:
            seq = self.lss.popleft()
            if not self.lss:
                self.lss = None
                self.sseq = self.lss_resume + 1
            else:
                self.sseq = seq + 1
            try:
                return store.load_msg(seq), 1, "lss"
            except StoreError:
                continue  # removed since the consumer started
        try:
            if len(self.filters) <= 1:
                sm, _ = store.load_next_msg(self.scan_filter, self.sseq)
            else:
                sm = None
                for f in self.filters:
                    try:
                        cand, _ = store.load_next_msg(f, self.sseq)
                    except ErrStoreEOF:
                        continue
                    if sm is None or cand.seq < sm.seq:
                        sm = cand
                if sm is None:
                    raise ErrStoreEOF()
        except ErrStoreEOF:
            # Like nats-server, the position moves past everything looked at.
            last = store.state().last_seq
            if self.sseq <= last:
                self.sseq = last + 1
            if self.npc != 0:
                self.npc, self.npf = 0, last
            return "eof"
        except StoreError:
            return "eof"
        self.sseq = sm.seq + 1
        return sm, 1, "next"

    def _undo(self, seq: int, dc: int, source: str) -> None:
        """A picked message was not sent: put it back where it came from."""
        if dc == 1:
            self.npc += 1
        if source == "rdq":
            if seq not in self.rdq_set:
                self.rdq.appendleft(seq)
                self.rdq_set.add(seq)
        elif source == "lss":
            if self.lss is None:
                self.lss = deque()
            self.lss.appendleft(seq)
            self.sseq = seq
        elif seq == self.sseq - 1:
            self.sseq = seq

    def _delivered(self, seq: int, dc: int, ts: int, psz: int) -> None:
        """Book a delivery (nats-server deliverMsg after the send)."""
        dseq = self.dseq
        self.dseq += 1
        now = time.time_ns()
        self.ldt = now
        if dc > 1:
            self.rdc[seq] = dc - 1
        self.store.update_delivered(dseq, seq, dc, ts)
        ap = self.cfg["ack_policy"]
        if ap == ACK_NONE:
            self.adflr = dseq
            self.asflr = seq
        else:
            self._track_pending(seq, dseq, now)
        if self.maxpb > 0:
            self.pbytes += psz
            if self._need_flow_control(psz):
                self._send_flow_control()
        mono = time.monotonic_ns()
        if self.push:
            self._last_activity = mono
        elif self.dthresh > 0:
            self.waiting_last = mono
        self._schedule_flush()
        if ap == ACK_NONE and self.stream.retention != "limits":
            self.stream.ack_msg(self, seq)

    def _track_pending(self, seq: int, dseq: int, now: int) -> None:
        p = self.pending.get(seq)
        if p is not None:
            p.ts = now  # a redelivery keeps its first delivery sequence
        else:
            self.pending[seq] = Pending(dseq, now)
        delay = self.cfg["ack_wait"]
        backoff = self.cfg["backoff"]
        if backoff:
            delay = backoff[min(max(self.rdc.get(seq, 0), 0), len(backoff) - 1)]
        self._arm_ack_timer(delay + ACK_WAIT_SLACK)

    # -- pacing: replay "original" and rate limits

    def _paced(self, ts: int, size: int) -> bool:
        """Whether the message may go now; if not, a timer resumes delivery when it may. Replay "original" keeps
        the gaps between the messages' timestamps until the consumer has caught up with what the stream held
        when it started; a rate limit spaces messages by their size."""
        mono = time.monotonic_ns()
        due = 0
        if self.replay and self._replay_lts and ts > self._replay_lts:
            due = self._replay_wall + (ts - self._replay_lts)
        rate = self.cfg["rate_limit_bps"]
        if rate and self._rate_next > due:
            due = self._rate_next
        if due - mono > MS:
            if self._pace_timer is None:
                self._pace_timer = self.jsa.call_later((due - mono) / NS, self._pace_due)
            return False
        if self.replay:
            self._replay_lts, self._replay_wall = ts, mono
            if self.sseq > self._replay_lseq:
                self.replay = False
        if rate:
            self._rate_next = max(self._rate_next, mono) + size * 8 * NS // rate
        return True

    def _pace_due(self) -> None:
        self._pace_timer = None
        self.kick()

    # -- pull requests

    def process_next_request(self, reply: bytes, payload: bytes) -> None:
        """A MSG.NEXT request (or +NXT): validate, queue, deliver (nats-server processNextMsgRequest)."""
        if self.closed or not reply:
            return
        if self.push:
            self._status(reply, 409, "Consumer is push based")
            return
        try:
            req = parse_next_request(payload)
        except ValueError as e:
            self._status(reply, 400, f"Bad Request - {e}")
            return
        cfg = self.cfg
        if cfg["max_batch"] > 0 and req.batch > cfg["max_batch"]:
            self._status(reply, 409, f"Exceeded MaxRequestBatch of {cfg['max_batch']}")
            return
        if req.expires > 0 and cfg["max_expires"] > 0 and req.expires > cfg["max_expires"]:
            self._status(reply, 409, f"Exceeded MaxRequestExpires of {format_duration(cfg['max_expires'])}")
            return
        if req.max_bytes > 0 and cfg["max_bytes"] > 0 and req.max_bytes > cfg["max_bytes"]:
            self._status(reply, 409, f"Exceeded MaxRequestMaxBytes of {cfg['max_bytes']}")
            return
        if req.group is not None:
            if req.group.get("min_pending") or req.group.get("min_ack_pending"):
                self._status(reply, 400, "Bad Request - Not a Overflow Priority consumer")
                return
            if req.group.get("id"):
                self._status(reply, 400, "Bad Request - Not a Pinned Client Priority consumer")
                return
            if not 0 <= req.group.get("priority", 0) <= 9:
                self._status(reply, 400, "Bad Request - Priority must be between 0 and 9")
                return
        now = time.monotonic_ns()
        if len(self.waiting) >= cfg["max_waiting"] and now - self.last_waiting_check > WAITING_CHECK_INTERVAL:
            self._process_waiting(False)
        if req.no_wait:
            msgs_pending = self.num_pending() + len(self.rdq)
            if msgs_pending == 0 and req.expires == 0:
                self.waiting_last = now
                self._status(reply, 404, "No Messages")
                return
            if msgs_pending > 0:
                batch_pending = self._process_waiting(False)
                if msgs_pending < batch_pending:
                    self.waiting_last = now
                    self._status(reply, 408, "Requests Pending")
                    return
        if len(self.waiting) >= cfg["max_waiting"]:
            if req.heartbeat == 0:
                self._status(reply, 409, "Exceeded MaxWaiting")
            return
        self.waiting.append(WaitingRequest(reply, req, now))
        self.waiting_last = now
        self.kick()

    def _next_waiting(self, size: int) -> WaitingRequest | None:
        """The request the next message goes to (nats-server nextWaiting): expired ones get 408, ones whose
        max_bytes the message would pass get 409, ones nobody listens to any more are dropped. A request that
        still wants more moves to the back of the queue."""
        waiting = self.waiting
        now = time.monotonic_ns()
        while waiting:
            wr = waiting[0]
            if wr.expires and now >= wr.expires:
                waiting.popleft()
                self._status(wr.reply, 408, "Request Timeout", (HDR_PENDING_MSGS, wr.n), (HDR_PENDING_BYTES, wr.b))
                continue
            if wr.b > 0:
                if size <= wr.b:
                    wr.b -= size
                    if wr.b == 0:
                        wr.n = 1
                else:
                    waiting.popleft()
                    self._status(wr.reply, 409, "Message Size Exceeds MaxBytes", (HDR_PENDING_MSGS, wr.n),
                                 (HDR_PENDING_BYTES, wr.b))
                    continue
            if not has_interest(self.account, wr.reply):
                waiting.popleft()
                continue
            wr.d += 1
            wr.n -= 1
            if wr.n > 0 and len(waiting) > 1:
                waiting.popleft()
                waiting.append(wr)
            elif wr.n <= 0:
                waiting.popleft()
            return wr
        return None

    def _process_waiting(self, eos: bool) -> int:
        """Sweep the waiting requests (nats-server processWaiting): 408 for expired ones, 404 for no_wait ones at
        the end of the stream, drop those without interest, send due heartbeats. Returns the messages still
        asked for."""
        if not self.waiting:
            return 0
        now = time.monotonic_ns()
        self.last_waiting_check = now
        keep: deque[WaitingRequest] = deque()
        asked = 0
        for wr in self.waiting:
            expired = bool(wr.expires) and now >= wr.expires
            if expired:
                self._status(wr.reply, 408, "Request Timeout", (HDR_PENDING_MSGS, wr.n), (HDR_PENDING_BYTES, wr.b))
                continue
            if eos and wr.no_wait and (not wr.expires or wr.d > 0):
                self._status(wr.reply, 404, "No Messages")
                continue
            if not has_interest(self.account, wr.reply):
                continue
            asked += wr.n
            if wr.hbt and now >= wr.hbt:
                self._heartbeat(wr.reply)
                wr.hbt = now + wr.hb
            keep.append(wr)
        self.waiting = keep
        return asked

    def _arm_wait_timer(self) -> None:
        at = 0
        for wr in self.waiting:
            for t in (wr.expires, wr.hbt):
                if t and (not at or t < at):
                    at = t
        if not at:
            return
        if self._wait_timer is not None:
            if self._wait_timer_at <= at:
                return
            self._wait_timer.cancel()
        self._wait_timer_at = at
        self._wait_timer = self.jsa.call_later(max(at - time.monotonic_ns(), MS) / NS, self._wait_due)

    def _wait_due(self) -> None:
        self._wait_timer = None
        self._wait_timer_at = 0
        if self.closed:
            return
        self._process_waiting(True)
        self.kick()

    # -- acks

    def process_ack(self, dc: int, sseq: int, dseq: int, reply: bytes | None, payload: bytes) -> None:
        """A message on this consumer's ack subject (nats-server processAck)."""
        skip_reply = sseq == 0
        msg = payload
        if not msg or msg == ACK_ACK or msg == ACK_OK:
            if not self._ack(sseq, dseq, dc):
                skip_reply = True
        elif msg.startswith(ACK_NEXT):
            self._ack(sseq, dseq, dc)
            if reply:
                self.process_next_request(reply, msg[len(ACK_NEXT):])
            skip_reply = True
        elif msg.startswith(ACK_NAK):
            self._nak(sseq, dseq, dc, msg[len(ACK_NAK):])
        elif msg == ACK_PROGRESS:
            self._progress(sseq)
        elif msg.startswith(ACK_TERM):
            reason = msg[len(ACK_TERM):].strip().decode(errors="replace")
            if not self._ack(sseq, dseq, dc, term_reason=reason):
                skip_reply = True
        if reply and not skip_reply:
            deliver_frame(self.server, self.account, reply, reply, None, None, b"")
        self.kick()

    def _ack(self, sseq: int, dseq: int, dc: int, term_reason: str | None = None) -> bool:
        """Acknowledge (or terminate) stream message sseq; False when the ack is out of range and gets no reply
        (nats-server processAckMsg). A +TERM also sends its advisory."""
        if self.closed:
            return False
        if sseq >= self.sseq and not self.cfg["flow_control"]:
            return False
        ap = self.cfg["ack_policy"]
        acked: list[int] = []
        if ap == ACK_EXPLICIT:
            p = self.pending.pop(sseq, None)
            if p is not None:
                if term_reason is None and self.sample_freq:
                    self._sample_ack(sseq, dseq, dc, p.ts)
                dseq = p.dseq
                self._move_ack_floor(dseq, sseq)
                acked.append(sseq)
            self.rdc.pop(sseq, None)
            self._rdq_remove(sseq)
        elif ap == ACK_ALL:
            if dseq <= self.adflr or sseq <= self.asflr:
                if term_reason is not None:
                    self._term_advisory(sseq, dseq, dc, term_reason)
                return True
            self.adflr, self.asflr = dseq, sseq
            for s in [s for s in self.pending if s <= sseq]:
                del self.pending[s]
                acked.append(s)
            for s in [s for s in self.rdc if s <= sseq]:
                del self.rdc[s]
            for s in [s for s in self.rdq_set if s <= sseq]:
                self._rdq_remove(s)
            if sseq not in acked:
                acked.append(sseq)
        else:
            if term_reason is not None:
                self._term_advisory(sseq, dseq, dc, term_reason)
            return self.stream.retention != "limits"
        self._store_acks(dseq, sseq)
        if term_reason is not None:
            self._term_advisory(sseq, dseq, dc, term_reason)
        if self.stream.retention != "limits":
            for s in acked:
                self.stream.ack_msg(self, s)
        if not self.pending:
            self._cancel_ack_timer()
        return True

    def _sample_ack(self, sseq: int, dseq: int, dc: int, delivered_at: int) -> None:
        """Ack latency metrics for `sample_freq` percent of the acks (nats-server sampleAck)."""
        if self.sample_freq < 100 and random.randrange(100) > self.sample_freq:
            return
        self._advisory(f"{METRIC_ACK}.{self.stream.name}.{self.name}", {
            "type": "io.nats.jetstream.metric.v1.consumer_ack", "stream": self.stream.name, "consumer": self.name,
            "consumer_seq": dseq, "stream_seq": sseq, "ack_time": time.time_ns() - delivered_at, "deliveries": dc})

    def _store_acks(self, dseq: int, sseq: int) -> None:
        try:
            self.store.update_acks(dseq, sseq)
        except StoreError:
            pass  # not pending in the store (already acknowledged, or past max_deliver): nothing to record
        self.lat = time.time_ns()
        self._schedule_flush()

    def _term(self, sseq: int, dseq: int, dc: int, reason: str) -> None:
        self._ack(sseq, dseq, dc, term_reason=reason)

    def _term_advisory(self, sseq: int, dseq: int, dc: int, reason: str) -> None:
        body: dict[str, Any] = {"type": "io.nats.jetstream.advisory.v1.terminated", "stream": self.stream.name,
                                "consumer": self.name, "consumer_seq": dseq, "stream_seq": sseq, "deliveries": dc}
        if reason:
            body["reason"] = reason
        self._advisory(f"{ADV_TERMINATED}.{self.stream.name}.{self.name}", body)

    def _move_ack_floor(self, dseq: int, sseq: int) -> None:
        """After removing sseq from pending: raise the ack floors if it was the oldest outstanding delivery."""
        if not self.pending:
            self.adflr = self.dseq - 1
            self.asflr = self.sseq - 1
        elif dseq == self.adflr + 1:
            self.adflr, self.asflr = dseq, sseq
            nxt = next_pending(self.pending, sseq, self.sseq - 1)
            if nxt:
                p = self.pending[nxt]
                if p.dseq > 0:
                    self.adflr, self.asflr = p.dseq - 1, nxt - 1

    def _nak(self, sseq: int, dseq: int, dc: int, arg: bytes) -> None:
        if dseq <= self.adflr or dseq > self.dseq:
            return
        p = self.pending.get(sseq)
        if p is None:
            return
        self._advisory(f"{ADV_NAKED}.{self.stream.name}.{self.name}", {
            "type": "io.nats.jetstream.advisory.v1.nak", "stream": self.stream.name, "consumer": self.name,
            "consumer_seq": dseq, "stream_seq": sseq, "deliveries": dc})
        delay = parse_nak_delay(arg)
        if delay is not None:
            self._rdq_remove(sseq)
            # Due when ack_wait would have run out `delay` from now.
            p.ts = time.time_ns() - self.cfg["ack_wait"] + delay
            self.store.update_delivered(p.dseq, sseq, dc, p.ts)
            self._schedule_flush()
            if self._ack_timer is not None:
                self._arm_ack_timer(10 * MS, force=True)
            return
        if sseq not in self.rdq_set:
            self._rdq_add(sseq)

    def _progress(self, sseq: int) -> None:
        p = self.pending.get(sseq)
        if p is not None:
            p.ts = time.time_ns()
            self.store.update_delivered(p.dseq, sseq, 1, p.ts)
            self._schedule_flush()

    def _rdq_add(self, seq: int) -> None:
        self.rdq.append(seq)
        self.rdq_set.add(seq)

    def _rdq_remove(self, seq: int) -> None:
        if seq in self.rdq_set:
            self.rdq_set.discard(seq)
            try:
                self.rdq.remove(seq)
            except ValueError:
                pass

    def _dc(self, seq: int) -> int:
        """nats-server deliveryCount: the redelivery count, 1 when none (sic: one less than the deliveries after
        a redelivery, which is what nats-server compares with max_deliver)."""
        n = self.rdc.get(seq, 0)
        return n if n >= 1 else 1

    # -- ack wait, redelivery, max deliveries

    def _arm_ack_timer(self, delay_ns: int, force: bool = False) -> None:
        mono = time.monotonic_ns()
        end = mono + delay_ns
        if self._ack_timer is not None:
            if not force and self._ack_timer_end <= end:
                return
            self._ack_timer.cancel()
        self._ack_timer_end = end
        self._ack_timer = self.jsa.call_later(delay_ns / NS, self._check_pending)

    def _cancel_ack_timer(self) -> None:
        if self._ack_timer is not None:
            self._ack_timer.cancel()
            self._ack_timer = None

    def _check_pending(self) -> None:
        """The ack timer (nats-server checkPending): queue expired deliveries for redelivery, give up on those at
        max_deliver, and re-arm for the next deadline."""
        self._ack_timer = None
        if self.closed:
            return
        ack_wait = self.cfg["ack_wait"]
        if ack_wait <= 0:
            return
        backoff = self.cfg["backoff"]
        st = self.stream.store.state()
        fseq = st.first_seq
        now = time.time_ns()
        nxt = ack_wait + ACK_WAIT_SLACK
        if backoff:
            nxt = backoff[-1]
        expired: list[int] = []
        dropped = False
        for seq, p in list(self.pending.items()):
            if seq < fseq or seq <= self.asflr:
                del self.pending[seq]
                self.rdc.pop(seq, None)
                self._rdq_remove(seq)
                dropped = True
                if seq > self.asflr:
                    self.asflr = seq
                if p.dseq > self.adflr:
                    self.adflr = p.dseq
                continue
            elapsed, deadline = now - p.ts, ack_wait
            if backoff:
                dc = max(self.rdc.get(seq, 0), 0)
                nbi = dc + 1
                if dc + 1 >= len(backoff):
                    dc = len(backoff) - 1
                    nbi = dc
                deadline = backoff[dc]
                nxt = min(nxt, backoff[nbi])
            if elapsed >= deadline:
                if seq not in self.rdq_set and not self._has_max_deliveries(seq):
                    expired.append(seq)
            elif deadline - elapsed < nxt:
                nxt = deadline - elapsed
        if expired:
            expired.sort()
            for seq in expired:
                self._rdq_add(seq)
            # Later redeliveries keep their order: shift every expired timestamp by the same amount.
            off = now - self.pending[expired[0]].ts
            for seq in expired:
                p = self.pending.get(seq)
                if p is not None:
                    p.ts += off
        if self.pending:
            self._arm_ack_timer(max(nxt, 0))
        else:
            self.rdq.clear()
            self.rdq_set.clear()
            self.adflr, self.asflr = self.dseq - 1, self.sseq - 1
        if dropped:
            self._write_state()
        self.kick()

    def _has_max_deliveries(self, seq: int) -> bool:
        """nats-server hasMaxDeliveries: at the limit, send the advisory once and stop redelivering."""
        if not self.maxdc:
            return False
        dc = self._dc(seq)
        if dc < self.maxdc:
            return False
        if dc == self.maxdc:
            self._max_deliveries_advisory(seq, dc)
        p = self.pending.pop(seq, None)
        if p is not None:
            self.store.update_delivered(p.dseq, seq, dc + 1, p.ts)
            self._move_ack_floor(p.dseq, seq)
        self.rdc[seq] = dc
        return True

    def _max_deliveries_advisory(self, seq: int, deliveries: int) -> None:
        self._advisory(f"{ADV_MAX_DELIVERIES}.{self.stream.name}.{self.name}", {
            "type": "io.nats.jetstream.advisory.v1.max_deliver", "stream": self.stream.name, "consumer": self.name,
            "stream_seq": seq, "deliveries": deliveries})

    # -- push: interest, heartbeats, flow control

    def interest_changed(self) -> None:
        """Subscriptions changed on a subject that may be our deliver subject."""
        if self.closed or not self.push:
            return
        interest = has_interest(self.account, self.deliver_b)
        if interest == self.active:
            return
        self.active = interest
        if interest:
            if self._delete_timer is not None:
                self._delete_timer.cancel()
                self._delete_timer = None
            self.kick()
        else:
            self._interest_lost()

    def _interest_lost(self) -> None:
        if self.dthresh > 0 and self._delete_timer is None:
            self._delete_timer = self.jsa.call_later(self.dthresh / NS, self._delete_if_inactive)

    def _heartbeat_due(self) -> None:
        self._hb_timer = None
        if self.closed:
            return
        hb = self.cfg["idle_heartbeat"]
        idle = time.monotonic_ns() - self._last_activity
        if idle >= hb:
            if self.active:
                self._heartbeat(self.deliver_b)
                self._flush()
            self._last_activity = time.monotonic_ns()
            idle = 0
        self._hb_timer = self.jsa.call_later((hb - idle) / NS, self._heartbeat_due)

    def _heartbeat(self, dest: bytes) -> None:
        pairs: list[tuple[str, int | str]] = [(HDR_LAST_CONSUMER, self.dseq - 1), (HDR_LAST_STREAM, self.sseq - 1)]
        if self.fcid:
            pairs.append((HDR_STALLED, self.fcid))
        deliver_frame(self.server, self.account, dest, dest, None, status_header(100, "Idle Heartbeat", *pairs), b"")

    def _need_flow_control(self, size: int) -> bool:
        if not self.fcid and self.pbytes > self.maxpb // 2:
            return True
        if self.fcid and self.pbytes - self.fcsz >= self.maxpb:
            self.fcsz += size
        return False

    def _send_flow_control(self) -> None:
        if not self.push:
            return
        rnd = random.getrandbits(62)
        tag = ""
        for _ in range(4):
            tag += _B62[rnd % 62]
            rnd //= 62
        reply = self.fc_prefix + tag
        self.fcsz, self.fcid = self.pbytes, reply
        deliver_frame(self.server, self.account, self.deliver_b, self.deliver_b, reply.encode(),
                      status_header(100, "FlowControl Request"), b"")

    def process_flow_control(self, subject: str) -> None:
        """A reply to our latest flow-control request: widen the window and resume."""
        if self.closed or subject != self.fcid:
            return
        if self.maxpb < self.pblimit:
            self.maxpb = min(self.maxpb * 2, self.pblimit)
        self.pbytes = max(self.pbytes - self.fcsz, 0)
        self.fcid, self.fcsz = "", 0
        self.kick()

    # -- inactivity

    def _delete_if_inactive(self) -> None:
        """nats-server deleteNotActive: an ephemeral (or a durable with inactive_threshold) nobody uses goes away."""
        self._delete_timer = None
        if self.closed:
            return
        if self.push:
            if self.active:
                return
        else:
            elapsed = time.monotonic_ns() - self.waiting_last
            if elapsed < self.dthresh:
                self._delete_timer = self.jsa.call_later((self.dthresh - elapsed) / NS, self._delete_if_inactive)
                return
            self._process_waiting(True)
            if self.waiting:
                self._delete_timer = self.jsa.call_later(self.dthresh / NS, self._delete_if_inactive)
                return
            now = time.time_ns()
            delay = 0
            backoff = self.cfg["backoff"]
            for seq, p in self.pending.items():
                wait = self.cfg["ack_wait"]
                if backoff:
                    wait = backoff[min(max(self.rdc.get(seq, 0), 0), len(backoff) - 1)]
                t = p.ts + wait + ACK_WAIT_SLACK + self.dthresh
                if t > now:
                    delay = max(delay, t - now)
            if delay > 0:
                self._delete_timer = self.jsa.call_later(delay / NS, self._delete_if_inactive)
                return
        log.debug("JetStream consumer '%s > %s > %s' deleted after inactivity", self.account.name,
                  self.stream.name, self.name)
        self.delete_consumer(advisory=True)
        self._flush()

    # -- pause

    def _arm_pause(self) -> None:
        if self._pause_timer is not None:
            self._pause_timer.cancel()
            self._pause_timer = None
        pu = self.cfg["pause_until"]
        now = time.time_ns()
        if pu is not None and pu > now:
            self._pause_timer = self.jsa.call_later((pu - now + MS) / NS, self._unpause_due)

    def _unpause_due(self) -> None:
        self._pause_timer = None
        if self.closed:
            return
        if self._paused():
            self._arm_pause()  # the loop's clock ran ahead of the wall clock
            return
        self._pause_advisory()
        self.kick()

    def _pause_advisory(self) -> None:
        pu = self.cfg["pause_until"]
        body: dict[str, Any] = {"type": "io.nats.jetstream.advisory.v1.consumer_pause", "stream": self.stream.name,
                                "consumer": self.name, "paused": pu is not None and time.time_ns() < pu,
                                "pause_until": time_text(pu)}
        self._advisory(f"{ADV_PAUSE}.{self.stream.name}.{self.name}", body)

    def set_pause(self, pause_until: int | None) -> None:
        old = self.cfg["pause_until"]
        cfg = dict(self.cfg)
        cfg["pause_until"] = pause_until
        set_static_consumer_metadata(cfg)
        self.cfg = cfg
        self.persist_meta()
        if old != pause_until:
            self._arm_pause()
            self._pause_advisory()
        self.kick()

    # -- config updates

    def update_config(self, new: dict[str, Any]) -> None:
        """Apply an allowed update (the caller checked it with update_error)."""
        old = self.cfg
        self.cfg = new
        if new["deliver_subject"] != old["deliver_subject"]:
            _unwatch(self)
            self.deliver_b = new["deliver_subject"].encode()
            _watch(self)
            for seq in sorted(self.pending):
                if seq not in self.rdq_set:
                    self._rdq_add(seq)
            self.active = has_interest(self.account, self.deliver_b)
        refilter = filters_of(new) != filters_of(old)
        self.store.max_deliver = new["max_deliver"]
        self._set_filters()
        if new["inactive_threshold"] != old["inactive_threshold"] or not self.durable:
            self._set_inactive_threshold()
            if self._delete_timer is not None:
                self._delete_timer.cancel()
                self._delete_timer = None
            if self.dthresh > 0 and (not self.push or not self.active):
                self._delete_timer = self.jsa.call_later(self.dthresh / NS, self._delete_if_inactive)
        if new["ack_wait"] != old["ack_wait"] and self._ack_timer is not None:
            self._arm_ack_timer(100 * MS, force=True)
        if refilter:
            self.calc_num_pending()
        self.persist_meta()
        self.kick()

    # -- reset

    def reset(self, seq: int) -> int:
        """Start over at stream sequence `seq` (0: just after the ack floor), as nats-server's consumer reset;
        ApiError 10204 when the deliver policy does not allow it. Returns the sequence it starts at."""
        cfg = self.cfg
        dp = cfg["deliver_policy"]

        def invalid(why: str) -> ApiError:
            return js_error("JSConsumerInvalidResetErr", err=why)

        if seq == 0:
            seq = self.asflr + 1
        elif dp == "by_start_sequence":
            if seq < cfg["opt_start_seq"]:
                raise invalid("below start seq")
        elif dp == "by_start_time":
            if seq < self.stream.store.get_seq_from_time(cfg["opt_start_time"] or 0):
                raise invalid("below start time")
        elif dp != "all":
            raise invalid("not allowed")
        seq = max(seq, 1)
        self.pending.clear()
        self.rdc.clear()
        self.rdq.clear()
        self.rdq_set.clear()
        self.lss = None
        self._cancel_ack_timer()
        self.sseq, self.dseq = seq, 1
        self.adflr, self.asflr = 0, seq - 1
        self.ldt = self.lat = 0
        self.store.reset(seq - 1)
        self._schedule_flush()
        if self.stream.retention == "interest":
            self._release_interest(0)
        self.calc_num_pending()
        return seq

    # -- info

    def info(self, dynamic: bool = False) -> dict[str, Any]:
        """The consumer_info body without "type" (nats-server ConsumerInfo); `dynamic` adds the server's
        metadata keys, as the create and info responses do."""
        np = self._checked_num_pending()
        st = self.store.state()
        if self.store.has_state():
            dc, ds = st.delivered.consumer_seq, st.delivered.stream_seq
        else:
            dc, ds = max(self.dseq, 1) - 1, max(self.sseq, 1) - 1
        delivered: dict[str, Any] = {"consumer_seq": dc, "stream_seq": ds}
        if self.ldt:
            delivered["last_active"] = rfc3339(self.ldt)
        ack_floor: dict[str, Any] = {"consumer_seq": st.ack_floor.consumer_seq,
                                     "stream_seq": st.ack_floor.stream_seq}
        if self.lat:
            ack_floor["last_active"] = rfc3339(self.lat)
        if not self.push:
            self._process_waiting(False)
        out: dict[str, Any] = {
            "stream_name": self.stream.name,
            "name": self.name,
            "created": rfc3339(self.created),
            "config": self.config_out(dynamic),
            "delivered": delivered,
            "ack_floor": ack_floor,
            "num_ack_pending": len(self.pending),
            "num_redelivered": 0 if self.cfg["max_deliver"] == 1 else len(self.rdc),
            "num_waiting": len(self.waiting),
            "num_pending": np,
        }
        if self.push and self.active:
            out["push_bound"] = True
        pu = self.cfg["pause_until"]
        now = time.time_ns()
        if pu is not None and now < pu:
            out["paused"] = True
            out["pause_remaining"] = pu - now
        out["ts"] = rfc3339(time.time_ns())
        self._flush()
        return out

    def config_out(self, dynamic: bool) -> dict[str, Any]:
        md = self.cfg["metadata"]
        return config_json(self.cfg, dynamic_metadata(md, self.server.version) if dynamic else dict(md or {}))

    # -- persistence

    def persist_meta(self) -> None:
        """Durable consumers of file streams keep their config in `<stream dir>/obs/<name>/meta.json`."""
        if not self.file_backed or self.closed:
            return
        from host.jetstream.filestore import atomic_write

        path = os.path.join(self.stream.dir, "obs", self.name)
        os.makedirs(path, exist_ok=True)
        meta = {"stream_name": self.stream.name, "name": self.name, "created": rfc3339(self.created),
                "created_ns": self.created, "config": config_json(self.cfg)}
        atomic_write(os.path.join(path, "meta.json"), dumps(meta))

    def _schedule_flush(self) -> None:
        """File-backed state is written at most once a second (and at every stream sync and at shutdown), so a
        crash loses at most a second of acks; with sync "always" the store writes every change itself."""
        if self.file_backed and self._flush_timer is None:
            self._flush_timer = self.jsa.call_later(FLUSH_DELAY, self.flush)

    def flush(self) -> None:
        """Write the delivery and ack state to disk (called by the stream's sync timer too)."""
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        if not self.file_backed or self.closed:
            return
        try:
            self.store.flush()  # type: ignore[attr-defined]
        except (OSError, StoreError, ValueError) as e:
            log.error("JetStream consumer '%s > %s > %s': writing state failed: %s", self.account.name,
                      self.stream.name, self.name, e)

    # -- output helpers

    def _status(self, dest: bytes, code: int, text: str, *pairs: tuple[str, int | str]) -> None:
        deliver_frame(self.server, self.account, dest, dest, None, status_header(code, text, *pairs), b"")

    def _advisory(self, subject: str, body: dict[str, Any]) -> None:
        subj = subject.encode()
        if not has_interest(self.account, subj):
            return
        event = {"type": body.pop("type"), "id": nuid(22), "timestamp": rfc3339(time.time_ns())}
        event.update(body)
        self.jsa.publish(subj, None, None, dumps(event))

    def _flush(self) -> None:
        if self.server.reading is None:
            self.server.flush_dirty()

    # -- lifecycle

    def _cancel_timers(self) -> None:
        for name in ("_ack_timer", "_delete_timer", "_hb_timer", "_wait_timer", "_pause_timer", "_pace_timer",
                     "_flush_timer"):
            h = getattr(self, name)
            if h is not None:
                h.cancel()
                setattr(self, name, None)

    def stop(self) -> None:
        """Hub shutdown: write state, cancel timers."""
        if self.closed:
            return
        self.closed = True
        self._cancel_timers()
        try:
            self.store.stop()
        except OSError as e:
            log.error("JetStream consumer '%s > %s > %s': writing state failed: %s", self.account.name,
                      self.stream.name, self.name, e)

    def delete(self) -> None:
        """The stream is being deleted: release waiting requests and remove our state (no advisory)."""
        self.delete_consumer(advisory=False)

    def delete_consumer(self, advisory: bool) -> None:
        """Remove this consumer: 409 to waiting pull requests, the delete advisory, state files gone."""
        if self.closed:
            return
        if advisory:
            self._advisory(f"{ADV_DELETED}.{self.stream.name}.{self.name}", {
                "type": "io.nats.jetstream.advisory.v1.consumer_action", "stream": self.stream.name,
                "consumer": self.name, "action": "delete"})
        for wr in self.waiting:
            self._status(wr.reply, 409, "Consumer Deleted")
        self.waiting.clear()
        self.closed = True
        self._cancel_timers()
        if self.stream.consumers.get(self.name) is self:
            del self.stream.consumers[self.name]
        self.store.delete()
        if self.file_backed and self.stream.dir:
            shutil.rmtree(os.path.join(self.stream.dir, "obs", self.name), ignore_errors=True)
        _unwatch(self)
        if self.stream.retention == "interest" and not self.stream.closed:
            self._release_interest(self.asflr + 1)

    def _release_interest(self, start: int) -> None:
        """Interest streams: drop the messages from `start` on that no consumer needs any more (nats-server
        cleanupNoInterestMessages, after a consumer went away or moved); with no consumer left, all of them."""
        stream = self.stream
        store = stream.store
        if not stream.consumers:
            if store.state().msgs:
                stream.purge(None, 0, 0)
            return
        st = store.state()
        start = max(start, st.first_seq)
        if st.last_seq - start > INTEREST_CLEANUP_MAX:
            return
        removed = False
        for seq in range(start, st.last_seq + 1):
            try:
                subject = store.subject_for_seq(seq)
            except StoreError:
                continue
            if not any(c.needs(seq, subject) for c in stream.consumers.values()):
                store.remove_msg(seq)
                removed = True
        if removed:
            for c in list(stream.consumers.values()):
                c.on_purge()


# ---- registry of push consumers by deliver subject (interest tracking) --------------------------------------------

# account -> deliver subject -> push consumers
_WATCH: weakref.WeakKeyDictionary[Account, dict[bytes, list[Consumer]]] = weakref.WeakKeyDictionary()


def _watch(c: Consumer) -> None:
    _WATCH.setdefault(c.account, {}).setdefault(c.deliver_b, []).append(c)


def _unwatch(c: Consumer) -> None:
    by = _WATCH.get(c.account)
    if not by:
        return
    lst = by.get(c.deliver_b)
    if lst and c in lst:
        lst.remove(c)
        if not lst:
            del by[c.deliver_b]


def _interest_hook(acc: Account) -> Callable[[bytes], None]:
    ref = weakref.ref(acc)

    def changed(subject: bytes) -> None:
        account = ref()
        by = _WATCH.get(account) if account is not None else None
        if not by:
            return
        lst = by.get(subject)
        if lst is not None:
            for c in list(lst):
                c.interest_changed()
        if b"*" in subject or b">" in subject:
            for deliver, cs in list(by.items()):
                if deliver != subject and subject_matches(subject, deliver):
                    for c in list(cs):
                        c.interest_changed()

    return changed


# ---- entry points for jetstream.py and stream.py -----------------------------------------------------------------


def install(jsa: JSAccount) -> None:
    """Subscribe the account's ack and flow-control subjects and watch deliver-subject interest."""
    acc = jsa.account

    def on_ack(src: Any, subject: bytes, reply: bytes | None, hdr: bytes | None, payload: bytes) -> bool:
        # nats-server subscribes the ack subjects per consumer, and only when acks are expected: an ack for
        # anything else reaches nobody (False: not taken, so an AckSync requester gets 503 no responders).
        info = parse_ack_subject(subject.decode(errors="replace"))
        if info is None:
            return False
        c = _lookup(jsa, info[0], info[1])
        if c is None or c.cfg["ack_policy"] == ACK_NONE:
            return False
        c.process_ack(info[2], info[3], info[4], reply, payload)
        return True

    def on_fc(src: Any, subject: bytes, reply: bytes | None, hdr: bytes | None, payload: bytes) -> bool:
        text = subject.decode(errors="replace")
        toks = text.split(".")
        if len(toks) == 5:
            c = _lookup(jsa, toks[2], toks[3])
        elif len(toks) >= 7:
            c = _lookup(jsa, toks[4], toks[5])
        else:
            return False
        if c is None or not c.cfg["flow_control"]:
            return False
        c.process_flow_control(text)
        return True

    acc.add_internal(b"$JS.ACK.>", on_ack)
    acc.add_internal(b"$JS.FC.>", on_fc)
    acc.interest_watchers.append(_interest_hook(acc))


def _lookup(jsa: JSAccount, stream: str, name: str) -> Consumer | None:
    s = jsa.streams.get(stream)
    if s is None:
        return None
    c = s.consumers.get(name)
    return c if isinstance(c, Consumer) else None


def recover(stream: Any) -> None:
    """Restore the durable consumers of a file stream from `<stream dir>/obs/*/meta.json` and their state."""
    if not stream.dir:
        return
    obs = os.path.join(stream.dir, "obs")
    try:
        names = sorted(os.listdir(obs))
    except FileNotFoundError:
        return
    for name in names:
        meta_path = os.path.join(obs, name, "meta.json")
        try:
            with open(meta_path, "rb") as f:
                meta = json.loads(f.read())
            cfg = config_from(decode(meta["config"], CONFIG_SCHEMA, "ConsumerConfig"))
            created = int(meta.get("created_ns") or 0)
        except (OSError, ValueError, KeyError, TypeError, ApiError) as e:
            log.error("JetStream consumer '%s > %s > %s' not recovered: %s", stream.jsa.account.name, stream.name,
                      name, getattr(e, "description", e))
            continue
        if cfg.get("durable_name") != name:
            log.error("JetStream consumer '%s > %s > %s' not recovered: meta.json names %r", stream.jsa.account.name,
                      stream.name, name, cfg.get("durable_name"))
            continue
        c = Consumer(stream, name, cfg, created)
        try:
            c.store = stream.store.consumer_store(name, cfg["ack_policy"], cfg["max_deliver"])
            c.file_backed = True
            state = c.store.state()
        except (OSError, StoreError, ValueError) as e:
            log.error("JetStream consumer '%s > %s > %s' not recovered: %s", stream.jsa.account.name, stream.name,
                      name, e)
            continue
        if c.store.has_state():
            c.apply_state(state)
        else:
            c.select_start()
        stream.consumers[name] = c
        if c.push:
            _watch(c)
        c.start()


# ---- the API -----------------------------------------------------------------------------------------------------


def consumer_api(jsa: JSAccount, tokens: list[str], reply: bytes | None, hdr: bytes | None, payload: bytes) -> None:
    """One `$JS.API.CONSUMER.>` request. Malformed subjects get no reply, as with nats-server, and like pull
    requests (handled by the consumer, not the API, in nats-server) they do not count in the account's API total."""
    n = len(tokens)
    op = tokens[3] if n > 3 else ""
    served = True
    try:
        if n < 5:
            served = False
        elif op == "CREATE":
            _create(jsa, tokens, reply, hdr, payload, durable_subject=False)
        elif op == "DURABLE" and n == 7 and tokens[4] == "CREATE":
            _create(jsa, tokens, reply, hdr, payload, durable_subject=True)
        elif op == "MSG" and n == 7 and tokens[4] == "NEXT":
            served = False
            _next(jsa, tokens[5], tokens[6], reply, hdr, payload)
        elif op == "INFO" and n == 6:
            _info(jsa, tokens[4], tokens[5], reply, hdr, payload)
        elif op == "NAMES" and n == 5:
            _names(jsa, tokens[4], reply, hdr, payload, full=False)
        elif op == "LIST" and n == 5:
            _names(jsa, tokens[4], reply, hdr, payload, full=True)
        elif op == "DELETE" and n == 6:
            _delete(jsa, tokens[4], tokens[5], reply, hdr, payload)
        elif op == "PAUSE" and n == 6:
            _pause(jsa, tokens[4], tokens[5], reply, hdr, payload)
        elif op == "RESET" and n == 6:
            served = False  # the consumer's own subscription in nats-server, like pull requests
            _reset(jsa, tokens[4], tokens[5], reply, hdr, payload)
        elif op == "LEADER" and n == 7 and tokens[4] == "STEPDOWN":
            jsa.respond_error(reply, T_STEPDOWN, js_error("JSClusterRequiredErr"))
        else:
            served = False
    finally:
        if served:
            jsa.api_total += 1
        server = jsa.server
        if server.reading is None:
            server.flush_dirty()


def _create(jsa: JSAccount, tokens: list[str], reply: bytes | None, hdr: bytes | None, payload: bytes,
            durable_subject: bool) -> None:
    try:
        c, created = _create_consumer(jsa, tokens, hdr, payload, durable_subject)
    except ApiError as e:
        jsa.respond_error(reply, T_CREATE, e)
        return
    if created:
        c._advisory(f"{ADV_CREATED}.{c.stream.name}.{c.name}", {
            "type": "io.nats.jetstream.advisory.v1.consumer_action", "stream": c.stream.name, "consumer": c.name,
            "action": "create"})
    body = {"type": T_CREATE}
    body.update(c.info(dynamic=True))
    jsa.respond(reply, body)
    if created and c._paused():
        c._pause_advisory()
    c.kick()


def _create_consumer(jsa: JSAccount, tokens: list[str], hdr: bytes | None, payload: bytes,
                     durable_subject: bool) -> tuple[Consumer, bool]:
    """Validate and create (or update) a consumer, as nats-server jsConsumerCreateRequest + addConsumer;
    returns it and whether it is new."""
    stream_name, cfg, action, pedantic = parse_create_request(payload)
    if api_level_too_high(hdr):
        raise js_error("JSRequiredApiLevelErr")
    n = len(tokens)
    filtered = ""
    if n == 5:
        kind, stream, name = "ephemeral", tokens[4], cfg["name"]
    elif durable_subject:
        kind, stream, name = "durable", tokens[5], tokens[6]
    else:
        kind, stream, name = "new", tokens[4], tokens[5]
        if n > 6:
            filtered = ".".join(tokens[6:])
    if stream != stream_name:
        raise js_error("JSStreamMismatchErr")
    if name and ("\\" in name or "/" in name):
        raise js_error("JSConsumerNameContainsPathSeparatorsErr")
    if kind == "durable":
        if not cfg["durable_name"]:
            raise js_error("JSConsumerDurableNameNotSetErr")
        if name != cfg["durable_name"]:
            raise js_error("JSConsumerDurableNameNotMatchSubjectErr")
        cfg["name"] = name
    elif kind == "new":
        if cfg["durable_name"] and name != cfg["durable_name"]:
            raise js_error("JSConsumerDurableNameNotMatchSubjectErr")
        cfg["name"] = name
    elif cfg["durable_name"]:
        raise js_error("JSConsumerEphemeralWithDurableNameErr")
    if filtered and cfg["filter_subjects"]:
        raise js_error("JSConsumerMultipleFiltersNotAllowed")
    if filtered and cfg["filter_subject"] != filtered:
        raise js_error("JSConsumerCreateFilterSubjectMismatchErr")
    if cfg["num_replicas"] > 1:
        raise js_error("JSStreamReplicasNotSupportedErr")
    st = jsa.streams.get(stream)
    if st is None:
        raise js_error("JSStreamNotFoundErr")
    existing = st.consumers.get(cfg["durable_name"] or cfg["name"]) if (cfg["durable_name"] or cfg["name"]) else None
    if isinstance(existing, Consumer):
        cfg["pause_until"] = existing.cfg["pause_until"]
    set_static_consumer_metadata(cfg)
    apply_defaults(cfg, st.config, pedantic)
    check_config(cfg, st.config)
    if isinstance(existing, Consumer):
        if action == "create" and cfg != existing.cfg:
            raise js_error("JSConsumerAlreadyExists")
        if st.retention == "workqueue" and not _partition_unique(st, existing.name, filters_of(cfg)):
            raise js_error("JSConsumerWQConsumerNotUniqueErr")
        uerr = update_error(existing.cfg, cfg, bool(cfg["deliver_subject"]) and has_interest(
            jsa.account, existing.deliver_b))
        if uerr is not None:
            raise uerr
        if cfg != existing.cfg:
            existing.update_config(cfg)
        return existing, False
    if action == "update":
        raise js_error("JSConsumerDoesNotExist")
    maxc = int(st.config.get("max_consumers") or 0)
    if maxc > 0 and len(st.consumers) >= maxc:
        raise js_error("JSMaximumConsumersLimitErr")
    if st.retention == "workqueue" and not cfg["direct"]:
        if cfg["ack_policy"] != ACK_EXPLICIT:
            raise js_error("JSConsumerWQRequiresExplicitAckErr")
        if cfg["deliver_policy"] != "all":
            raise js_error("JSConsumerWQConsumerNotDeliverAllErr")
        if st.consumers:
            flts = filters_of(cfg)
            if not flts:
                raise js_error("JSConsumerWQMultipleUnfilteredErr")
            if not _partition_unique(st, "", flts):
                raise js_error("JSConsumerWQConsumerNotUniqueErr")
    if cfg["durable_name"]:
        if len(cfg["durable_name"]) > MAX_NAME_LEN:
            raise js_error("JSConsumerNameTooLongErrF", max=MAX_NAME_LEN)
        name = cfg["durable_name"]
    elif cfg["name"]:
        name = cfg["name"]
    else:
        # A generated name is not written into the config (nats-server copies the config before naming).
        name = _ephemeral_name()
        while name in st.consumers:
            name = _ephemeral_name()
    if not valid_name(name):
        raise js_error("JSConsumerBadDurableNameErr")
    c = Consumer(st, name, cfg, time.time_ns())
    if c.durable and st.dir and not cfg["mem_storage"]:
        try:
            c.store = st.store.consumer_store(name, cfg["ack_policy"], cfg["max_deliver"])
            c.file_backed = True
        except (OSError, StoreError, ValueError) as e:
            raise js_error("JSConsumerStoreFailedErrF", err=e) from None
    c.select_start()
    try:
        c.persist_meta()
    except OSError as e:
        c.store.delete()
        raise js_error("JSConsumerStoreFailedErrF", err=e) from None
    st.consumers[name] = c
    if c.push:
        _watch(c)
    c.start()
    return c, True


def _partition_unique(st: Any, name: str, flts: list[str]) -> bool:
    """Workqueue streams: no two consumers may share a subject (nats-server partitionUnique)."""
    for other_name, o in st.consumers.items():
        if other_name == name or not isinstance(o, Consumer):
            continue
        if not o.filters:
            return False
        for a in flts:
            for b in o.filters:
                if subjects_overlap(a, b):
                    return False
    return True


def _next(jsa: JSAccount, stream: str, name: str, reply: bytes | None, hdr: bytes | None, payload: bytes) -> None:
    if not reply:
        return
    c = _lookup(jsa, stream, name)
    if c is None:
        return  # nats-server: no consumer, no subscriber (the router leaves these to a 503)
    if api_level_too_high(hdr) and not c.push:
        c._status(reply, 412, "Required Api Level")
        c._flush()
        return
    c.process_next_request(reply, payload)


def _stream_or_error(jsa: JSAccount, stream: str) -> Any:
    st = jsa.streams.get(stream)
    if st is None:
        raise js_error("JSStreamNotFoundErr")
    return st


def _info(jsa: JSAccount, stream: str, name: str, reply: bytes | None, hdr: bytes | None, payload: bytes) -> None:
    try:
        if not is_empty_request(payload):
            raise js_error("JSNotEmptyRequestErr")
        if api_level_too_high(hdr):
            raise js_error("JSRequiredApiLevelErr")
        st = _stream_or_error(jsa, stream)
        c = st.consumers.get(name)
        if not isinstance(c, Consumer) or c.closed:
            raise js_error("JSConsumerNotFoundErr")
    except ApiError as e:
        jsa.respond_error(reply, T_INFO, e)
        return
    body = {"type": T_INFO}
    body.update(c.info(dynamic=True))
    jsa.respond(reply, body)


def _offset(payload: bytes) -> int:
    if not is_json_object_or_array(payload):
        return 0
    req = decode_request(payload, {"offset": "int"}, "JSApiConsumersRequest")
    return max(req.get("offset", 0), 0)


def _names(jsa: JSAccount, stream: str, reply: bytes | None, hdr: bytes | None, payload: bytes,
           full: bool) -> None:
    type_name = T_LIST if full else T_NAMES
    try:
        if api_level_too_high(hdr):
            raise js_error("JSRequiredApiLevelErr")
        offset = _offset(payload)
        st = _stream_or_error(jsa, stream)
    except ApiError as e:
        jsa.api_errors += 1
        jsa.respond(reply, {"type": type_name, "error": e.body(), "total": 0, "offset": 0, "limit": 0,
                            "consumers": []})
        return
    consumers = sorted((c for c in st.consumers.values() if isinstance(c, Consumer) and not c.cfg["direct"]),
                       key=lambda c: c.name)
    total = len(consumers)
    offset = min(offset, total)
    page = consumers[offset: offset + (LIST_LIMIT if full else NAMES_LIMIT)]
    out: dict[str, Any] = {"type": type_name, "total": total, "offset": offset,
                           "limit": LIST_LIMIT if full else NAMES_LIMIT}
    out["consumers"] = [c.info() for c in page] if full else [c.name for c in page]
    jsa.respond(reply, out)


def _delete(jsa: JSAccount, stream: str, name: str, reply: bytes | None, hdr: bytes | None, payload: bytes) -> None:
    try:
        if api_level_too_high(hdr):
            raise js_error("JSRequiredApiLevelErr")
        if not is_empty_request(payload):
            raise js_error("JSNotEmptyRequestErr")
        st = _stream_or_error(jsa, stream)
        c = st.consumers.get(name)
        if not isinstance(c, Consumer) or c.closed:
            raise js_error("JSConsumerNotFoundErr")
    except ApiError as e:
        jsa.respond_error(reply, T_DELETE, e)
        return
    c.delete_consumer(advisory=True)
    jsa.respond(reply, {"type": T_DELETE, "success": True})


def _pause(jsa: JSAccount, stream: str, name: str, reply: bytes | None, hdr: bytes | None, payload: bytes) -> None:
    zero = {"paused": False, "pause_until": time_text(None)}
    try:
        until: int | None = None
        if is_json_object_or_array(payload):
            until = decode_request(payload, {"pause_until": "time"}, "JSApiConsumerPauseRequest").get("pause_until")
        if api_level_too_high(hdr):
            raise js_error("JSRequiredApiLevelErr")
        st = _stream_or_error(jsa, stream)
        c = st.consumers.get(name)
        if not isinstance(c, Consumer) or c.closed:
            raise js_error("JSConsumerNotFoundErr")
    except ApiError as e:
        jsa.api_errors += 1
        body = {"type": T_PAUSE, "error": e.body()}
        body.update(zero)
        jsa.respond(reply, body)
        return
    try:
        c.set_pause(until)
    except OSError as e:
        jsa.respond_error(reply, T_PAUSE, js_error("JSConsumerStoreFailedErrF", err=e))
        return
    now = time.time_ns()
    out: dict[str, Any] = {"type": T_PAUSE, "paused": until is not None and now < until,
                           "pause_until": time_text(until)}
    if out["paused"]:
        out["pause_remaining"] = until - now  # type: ignore[operator]
    jsa.respond(reply, out)


def _reset(jsa: JSAccount, stream: str, name: str, reply: bytes | None, hdr: bytes | None, payload: bytes) -> None:
    """CONSUMER.RESET: start over at a sequence (or just after the ack floor), forgetting pending acks."""
    if not reply:
        return
    c = _lookup(jsa, stream, name)
    if c is None:
        return  # nats-server: the consumer's subscription answers, so a missing consumer gets no reply
    try:
        if api_level_too_high(hdr):
            raise js_error("JSRequiredApiLevelErr")
        req = decode_request(payload, {"seq": "uint64"}, "JSApiConsumerResetRequest", strict=False)
        seq = c.reset(req.get("seq", 0))
    except ApiError as e:
        # answered by the consumer in nats-server, so not an API error; the struct still writes reset_seq
        jsa.respond(reply, {"type": T_RESET, "error": e.body(), "reset_seq": 0})
        return
    body: dict[str, Any] = {"type": T_RESET}
    body.update(c.info(dynamic=True))
    body["reset_seq"] = seq
    jsa.respond(reply, body)
    c.kick()

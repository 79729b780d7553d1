"""The `$JS.API` request handlers for accounts, streams and direct gets (nats-server `jetstream_api.go`).

`dispatch` is the internal subscription callback on `$JS.API.>` of every JetStream-enabled account. It answers
like nats-server: the same JSON shapes and key order, the same error codes and texts, no reply at all for a subject
that names no API (`$JS.API.STREAM.INFO` without a stream), and requests without a reply subject are still carried
out (only the answer is dropped). `$JS.API.CONSUMER.>` goes to consumer_api.py.

Direct gets and pull requests are special in nats-server: they are served by subscriptions of the stream (with
`allow_direct`) and of the consumer, not by the API import. A direct get for a stream without `allow_direct`, or
a pull request for a consumer that does not exist, therefore reaches nobody and the requester gets a 503 no
responders status. `dispatch` returns False in those cases, which tells the delivery code that this subscription
did not take the message.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from host.headers import status_header
from host.jetstream.consumer_api import CONSUMERS_ZERO, PAUSE_ZERO, consumer_api
from host.jetstream.errors import ApiError, js_error
from host.jetstream.gojson import check_empty_request, decode_request, dumps, is_empty_request, is_json_object_or_array
from host.jetstream.store import StoreError
from host.jetstream.stream import Stream, stored_msg_json
from host.jetstream.stream_config import (
    LIST_LIMIT,
    NAMES_LIMIT,
    STREAM_CONFIG_SCHEMA,
    check_config,
    subjects_collide,
    update_check,
)
from host.jetstream.versioning import api_level_too_high, check_api_level, set_static_stream_metadata

if TYPE_CHECKING:
    from host.jetstream.jetstream import JSAccount

log = logging.getLogger("natsedge.hub")

T_ACCOUNT_INFO = "io.nats.jetstream.api.v1.account_info_response"
T_STREAM_CREATE = "io.nats.jetstream.api.v1.stream_create_response"
T_STREAM_UPDATE = "io.nats.jetstream.api.v1.stream_update_response"
T_STREAM_INFO = "io.nats.jetstream.api.v1.stream_info_response"
T_STREAM_DELETE = "io.nats.jetstream.api.v1.stream_delete_response"
T_STREAM_NAMES = "io.nats.jetstream.api.v1.stream_names_response"
T_STREAM_LIST = "io.nats.jetstream.api.v1.stream_list_response"
T_STREAM_PURGE = "io.nats.jetstream.api.v1.stream_purge_response"
T_MSG_GET = "io.nats.jetstream.api.v1.stream_msg_get_response"
T_MSG_DELETE = "io.nats.jetstream.api.v1.stream_msg_delete_response"
T_SNAPSHOT = "io.nats.jetstream.api.v1.stream_snapshot_response"
T_RESTORE = "io.nats.jetstream.api.v1.stream_restore_response"

# The fields nats-server's response structs always write, so its error answers carry them too.
PAGED_ZERO: dict[str, Any] = {"total": 0, "offset": 0, "limit": 0}
PURGE_ZERO: dict[str, Any] = {"purged": 0}
NAMES_ZERO: dict[str, Any] = {**PAGED_ZERO, "streams": None}
LIST_ZERO: dict[str, Any] = {**PAGED_ZERO, "streams": []}

MAX_SUBJECT_DETAILS = 100_000  # nats-server JSMaxSubjectDetails

PAGED_SCHEMA = {"offset": "int"}
NAMES_SCHEMA = {"offset": "int", "subject": "string"}
INFO_SCHEMA = {"offset": "int", "deleted_details": "bool", "subjects_filter": "string"}
PURGE_SCHEMA = {"seq": "uint64", "filter": "string", "keep": "uint64"}
MSG_DELETE_SCHEMA = {"seq": "uint64", "no_erase": "bool"}
MSG_GET_SCHEMA = {"seq": "uint64", "last_by_subj": "string", "next_by_subj": "string", "batch": "int",
                  "max_bytes": "int", "start_time": "time", "multi_last": "strings", "up_to_seq": "uint64",
                  "up_to_time": "time", "no_hdr": "bool"}
_DIRECT_STATUS = {
    "empty": status_header(408, "Empty Request"),
    "malformed": status_header(408, "Malformed Request"),
    "bad": status_header(408, "Bad Request"),
    "level": status_header(412, "Required Api Level"),
}


def _ok(jsa: JSAccount, reply: bytes | None, body: dict[str, Any]) -> None:
    """An answer nats-server counts as an API request (sendAPIResponse)."""
    jsa.api_total += 1
    jsa.respond(reply, body)


def _fail(jsa: JSAccount, reply: bytes | None, type_name: str, err: ApiError,
          extra: dict[str, Any] | None = None) -> None:
    """An answer nats-server counts as an API request and an API error (sendAPIErrResponse)."""
    jsa.api_total += 1
    jsa.respond_error(reply, type_name, err, extra)


Handler = Callable[["JSAccount", list[str], "bytes | None", "bytes | None", bytes], None]
# A handler after the checks `_api` runs: it gets its response type instead of the headers.
_Body = Callable[["JSAccount", str, list[str], "bytes | None", bytes], None]


def _api(type_name: str, extra: dict[str, Any] | None = None, empty: bool | None = None) -> Callable[[_Body], Handler]:
    """A handler answering as `type_name` (its errors with `extra`), after the checks nats-server starts it with,
    in its order: the required API level, then with `empty` True a body is refused, with False one is required."""

    def wrap(body: _Body) -> Handler:
        def handler(jsa: JSAccount, tokens: list[str], reply: bytes | None, hdr: bytes | None,
                    payload: bytes) -> None:
            try:
                check_api_level(hdr)
                if empty:
                    check_empty_request(payload)
                elif empty is False and is_empty_request(payload):
                    raise js_error("JSBadRequestErr")
            except ApiError as e:
                _fail(jsa, reply, type_name, e, extra)
                return
            body(jsa, type_name, tokens, reply, payload)

        return handler

    return wrap


def _decode(jsa: JSAccount, reply: bytes | None, type_name: str, payload: bytes, schema: dict[str, Any],
            schema_name: str, extra: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """The request body, or None when it was answered with its decoding error."""
    try:
        return decode_request(payload, schema, schema_name)
    except ApiError as e:
        _fail(jsa, reply, type_name, e, extra)
        return None


def dispatch(jsa: JSAccount, src: Any, subject: bytes, reply: bytes | None, hdr: bytes | None,
             payload: bytes) -> bool:
    """Route one `$JS.API.>` request. Returns False when nothing in the account serves it (see the module doc)."""
    tokens = subject.decode("utf-8", "replace").split(".")
    n = len(tokens)
    if n < 3:
        return True
    group = tokens[2]
    if group == "DIRECT":
        return _direct_get(jsa, tokens, reply, hdr, payload)
    if group == "CONSUMER":
        return _consumer(jsa, tokens, reply, hdr, payload)
    handler = _HANDLERS.get((group, tokens[3] if n > 3 else "", n))
    if handler is None and group == "STREAM" and n == 6:
        if tokens[3] == "MSG":
            handler = _MSG_HANDLERS.get(tokens[4])
        else:
            handler = _MULTI_TOKEN.get((tokens[3], tokens[4]))
    if handler is None:
        return True  # no such API: nats-server does not answer either
    try:
        handler(jsa, tokens, reply, hdr, payload)
    except Exception:  # noqa: BLE001 - a bug must not take the connection's read batch down
        log.exception("JetStream API request on %s failed", subject.decode("utf-8", "replace"))
    return True


# ---- account ---------------------------------------------------------------------------------------------------


@_api(T_ACCOUNT_INFO)
def account_info(jsa: JSAccount, T: str, tokens: list[str], reply: bytes | None, payload: bytes) -> None:
    body = {"type": T, **jsa.account_info()}  # the counters as they were before this request
    _ok(jsa, reply, body)


# ---- streams ---------------------------------------------------------------------------------------------------


def _same_config(new: dict[str, Any], old: dict[str, Any]) -> bool:
    """nats-server's create-is-idempotent test: equal configs, `_nats.req.level` taken from the existing one."""
    a = dict(new)
    meta = dict(a.get("metadata") or {})
    meta.pop("_nats.req.level", None)
    old_meta = old.get("metadata") or {}
    if "_nats.req.level" in old_meta:
        meta["_nats.req.level"] = old_meta["_nats.req.level"]
    a.pop("metadata", None)
    if meta:
        a["metadata"] = meta
    b = dict(old)
    if not b.get("metadata"):
        b.pop("metadata", None)
    return a == b


def _overlaps(jsa: JSAccount, subjects: list[str], skip: Stream | None) -> bool:
    for s in jsa.streams.values():
        if s is skip:
            continue
        for a in s.config.get("subjects", []):
            for b in subjects:
                if subjects_collide(a, b):
                    return True
    return False


@_api(T_STREAM_CREATE)
def stream_create(jsa: JSAccount, T: str, tokens: list[str], reply: bytes | None, payload: bytes) -> None:
    req = _decode(jsa, reply, T, payload, STREAM_CONFIG_SCHEMA, "StreamConfigRequest")
    if req is None:
        return
    pedantic = bool(req.pop("pedantic", False))
    name = tokens[4]
    if req.get("name", "") != name:
        _fail(jsa, reply, T, js_error("JSStreamMismatchErr"))
        return
    if "\\" in name or "/" in name:
        _fail(jsa, reply, T, js_error("JSStreamNameContainsPathSeparatorsErr"))
        return
    if req.get("sealed"):
        _fail(jsa, reply, T, js_error("JSStreamInvalidConfigF",
                                      err="stream configuration for create can not be sealed"))
        return
    if req.get("mirror_direct") and not req.get("mirror"):
        _fail(jsa, reply, T, js_error("JSStreamInvalidConfigF", err="stream has no mirror but does have mirror direct"))
        return
    try:
        jsa.check_stream_count(name)
        cfg = check_config(req, jsa, pedantic)
        set_static_stream_metadata(cfg)
        if cfg["num_replicas"] > 1:
            raise js_error("JSStreamReplicasNotSupportedErr")
        # nats-server checks the account's limits before the stream's config, for a stream that exists as well
        jsa.check_limits(cfg, replacing=name)
        jsa.check_max_bytes(cfg)
        existing = jsa.streams.get(name)
        if existing is not None:
            if not _same_config(cfg, existing.config):
                raise js_error("JSStreamNameExistErr")
            stream = existing
        else:
            if _overlaps(jsa, cfg.get("subjects", []), None):
                raise js_error("JSStreamSubjectOverlapErr")
            try:
                stream = Stream.create(jsa, cfg)
            except (StoreError, OSError) as e:
                log.warning("Stream create failed for '%s > %s': %s", jsa.account.name, name, e)
                raise js_error("JSStreamCreateErrF", err="error creating store for stream") from None
    except ApiError as e:
        _fail(jsa, reply, T, e)
        return
    body = {"type": T, **stream.info(dynamic=True, domain=False), "did_create": True}
    _ok(jsa, reply, body)


@_api(T_STREAM_UPDATE)
def stream_update(jsa: JSAccount, T: str, tokens: list[str], reply: bytes | None, payload: bytes) -> None:
    try:
        req = decode_request(payload, STREAM_CONFIG_SCHEMA, "StreamConfigRequest")
        pedantic = bool(req.pop("pedantic", False))
        cfg = check_config(req, jsa, pedantic)
        if cfg["name"] != tokens[4]:
            raise js_error("JSStreamMismatchErr")
        stream = jsa.streams.get(tokens[4])
        if stream is None:
            raise js_error("JSStreamNotFoundErr")
        set_static_stream_metadata(cfg)
        cfg = update_check(stream.config, cfg)
        jsa.check_max_bytes(cfg)
        if cfg["max_bytes"] > max(stream.config["max_bytes"], 0) or cfg["max_consumers"] != \
                stream.config["max_consumers"]:
            jsa.check_limits(cfg, replacing=stream.name)
        if _overlaps(jsa, cfg.get("subjects", []), stream):
            raise js_error("JSStreamSubjectOverlapErr")
        stream.update(cfg)
    except ApiError as e:
        _fail(jsa, reply, T, e)
        return
    body = {"type": T, **stream.info(dynamic=True)}
    _ok(jsa, reply, body)


@_api(T_STREAM_INFO, PAGED_ZERO)
def stream_info(jsa: JSAccount, T: str, tokens: list[str], reply: bytes | None, payload: bytes) -> None:
    paged = PAGED_ZERO
    deleted = False
    subjects_filter = ""
    offset = 0
    if is_json_object_or_array(payload):
        req = _decode(jsa, reply, T, payload, INFO_SCHEMA, "JSApiStreamInfoRequest", paged)
        if req is None:
            return
        deleted = req.get("deleted_details", False)
        subjects_filter = req.get("subjects_filter", "")
        offset = max(req.get("offset", 0), 0)
    stream = jsa.streams.get(tokens[4])
    if stream is None:
        _fail(jsa, reply, T, js_error("JSStreamNotFoundErr"), paged)
        return
    info = stream.info(dynamic=True, cluster=True, deleted=deleted)
    if subjects_filter:
        totals = stream.store.subjects_totals(subjects_filter)
        if totals:
            paged = {"total": len(totals), "offset": offset, "limit": MAX_SUBJECT_DETAILS}
            names = sorted(totals)
            if offset == 0 and len(names) <= MAX_SUBJECT_DETAILS:
                page = names
            else:
                start = min(offset, len(names))
                page = names[start:start + MAX_SUBJECT_DETAILS]
            if page:
                info["state"] = _with_subjects(info["state"], {s: totals[s] for s in page})
    _ok(jsa, reply, {"type": T, **paged, **info})


def _with_subjects(state: dict[str, Any], subjects: dict[str, int]) -> dict[str, Any]:
    """Insert `subjects` where nats-server's StreamState has it: after num_subjects, before num_deleted."""
    out: dict[str, Any] = {}
    for k, v in state.items():
        if k in ("num_deleted", "deleted", "consumer_count") and "subjects" not in out:
            out["subjects"] = subjects
        out[k] = v
    return out


@_api(T_STREAM_DELETE, empty=True)
def stream_delete(jsa: JSAccount, T: str, tokens: list[str], reply: bytes | None, payload: bytes) -> None:
    stream = jsa.streams.get(tokens[4])
    if stream is None:
        _fail(jsa, reply, T, js_error("JSStreamNotFoundErr"))
        return
    try:
        stream.delete()
    except (StoreError, OSError) as e:
        _fail(jsa, reply, T, js_error("JSStreamDeleteErrF", err=str(e)))
        return
    _ok(jsa, reply, {"type": T, "success": True})


def _stream_pages(full: bool) -> Handler:
    """STREAM.LIST (`full`, stream infos) or STREAM.NAMES: a page of the account's streams by name, those with a
    subject that collides with the request's filter if it has one."""
    if full:
        type_name, zero, limit, schema_name = T_STREAM_LIST, LIST_ZERO, LIST_LIMIT, "JSApiStreamListRequest"
    else:
        type_name, zero, limit, schema_name = T_STREAM_NAMES, NAMES_ZERO, NAMES_LIMIT, "JSApiStreamNamesRequest"

    @_api(type_name, zero)
    def pages(jsa: JSAccount, T: str, tokens: list[str], reply: bytes | None, payload: bytes) -> None:
        offset, subject = 0, ""
        if is_json_object_or_array(payload):
            req = _decode(jsa, reply, T, payload, NAMES_SCHEMA, schema_name, zero)
            if req is None:
                return
            offset, subject = max(req.get("offset", 0), 0), req.get("subject", "")
        streams = sorted((s for s in jsa.streams.values()
                          if not subject or any(subjects_collide(subject, x) for x in s.config.get("subjects", []))),
                         key=lambda s: s.name)
        offset = min(offset, len(streams))
        page = streams[offset:offset + limit]
        # nats-server writes no names as null but no infos as [].
        items = [s.info(dynamic=False) for s in page] if full else [s.name for s in page] or None
        _ok(jsa, reply, {"type": T, "total": len(streams), "offset": offset, "limit": limit, "streams": items})

    return pages


@_api(T_STREAM_PURGE, PURGE_ZERO)
def stream_purge(jsa: JSAccount, T: str, tokens: list[str], reply: bytes | None, payload: bytes) -> None:
    req: dict[str, Any] | None = {}
    if is_json_object_or_array(payload):
        req = _decode(jsa, reply, T, payload, PURGE_SCHEMA, "JSApiStreamPurgeRequest", PURGE_ZERO)
        if req is None:
            return
        if req.get("seq", 0) > 0 and req.get("keep", 0) > 0:
            _fail(jsa, reply, T, js_error("JSBadRequestErr"), PURGE_ZERO)
            return
    stream = jsa.streams.get(tokens[4])
    if stream is None:
        _fail(jsa, reply, T, js_error("JSStreamNotFoundErr"), PURGE_ZERO)
        return
    if stream.config["sealed"]:
        _fail(jsa, reply, T, js_error("JSStreamSealedErr"), PURGE_ZERO)
        return
    if stream.config["deny_purge"]:
        _fail(jsa, reply, T, js_error("JSStreamPurgeFailedF", err="stream purge not permitted"), PURGE_ZERO)
        return
    try:
        purged = stream.purge(req.get("filter", ""), req.get("seq", 0), req.get("keep", 0))
    except (StoreError, OSError) as e:
        _ok(jsa, reply, {"type": T, "error": js_error("JSStreamGeneralErrorF", err=str(e)).body(), "purged": 0})
        return
    _ok(jsa, reply, {"type": T, "success": True, "purged": purged})


# ---- messages ----------------------------------------------------------------------------------------------------


@_api(T_MSG_DELETE, empty=False)
def msg_delete(jsa: JSAccount, T: str, tokens: list[str], reply: bytes | None, payload: bytes) -> None:
    req = _decode(jsa, reply, T, payload, MSG_DELETE_SCHEMA, "JSApiMsgDeleteRequest")
    if req is None:
        return
    stream = jsa.streams.get(tokens[5])
    if stream is None:
        _fail(jsa, reply, T, js_error("JSStreamNotFoundErr"))
        return
    if stream.config["sealed"]:
        _fail(jsa, reply, T, js_error("JSStreamSealedErr"))
        return
    if stream.config["deny_delete"]:
        _fail(jsa, reply, T, js_error("JSStreamMsgDeleteFailedF", err="message delete not permitted"))
        return
    try:
        stream.remove_msg(req.get("seq", 0), erase=not req.get("no_erase", False))
    except ApiError as e:
        # nats-server sends these through its success path: counted as a request, not as an error.
        _ok(jsa, reply, {"type": T, "error": e.body()})
        return
    except (StoreError, OSError) as e:
        _ok(jsa, reply, {"type": T, "error": js_error("JSStreamMsgDeleteFailedF", err=str(e)).body()})
        return
    _ok(jsa, reply, {"type": T, "success": True})


def _msg_get_conflict(req: dict[str, Any]) -> bool:
    seq = req.get("seq", 0)
    last_for = req.get("last_by_subj", "")
    next_for = req.get("next_by_subj", "")
    start = "start_time" in req
    return bool((seq > 0 and last_for) or (seq == 0 and not last_for and not next_for and not start)
                or (seq > 0 and start) or (start and last_for) or (last_for and next_for))


@_api(T_MSG_GET, empty=False)
def msg_get(jsa: JSAccount, T: str, tokens: list[str], reply: bytes | None, payload: bytes) -> None:
    req = _decode(jsa, reply, T, payload, MSG_GET_SCHEMA, "JSApiMsgGetRequest")
    if req is None:
        return
    _parse_times(req)
    if req.get("batch", 0) > 0 or req.get("max_bytes", 0) > 0 or _msg_get_conflict(req):
        _fail(jsa, reply, T, js_error("JSBadRequestErr"))
        return
    stream = jsa.streams.get(tokens[5])
    if stream is None:
        _fail(jsa, reply, T, js_error("JSStreamNotFoundErr"))
        return
    try:
        sm = stream.get_msg(req)
    except StoreError:
        _fail(jsa, reply, T, js_error("JSNoMessageFoundErr"))
        return
    # nats-server answers a found message outside its API accounting.
    jsa.respond(reply, {"type": T, "message": stored_msg_json(sm, req.get("no_hdr", False))})


def _parse_times(req: dict[str, Any]) -> None:
    """A time given as Go's zero time is still given (a *time.Time in nats-server): the Unix epoch will do."""
    for key in ("start_time", "up_to_time"):
        if key in req:
            req[key] = req[key] or 0


# ---- direct get ------------------------------------------------------------------------------------------------


def _direct_get(jsa: JSAccount, tokens: list[str], reply: bytes | None, hdr: bytes | None, payload: bytes) -> bool:
    """`$JS.API.DIRECT.GET.<stream>` (JSON body) and `$JS.API.DIRECT.GET.<stream>.<subject>` (last by subject)."""
    if len(tokens) < 5 or tokens[3] != "GET":
        return False
    stream = jsa.streams.get(tokens[4])
    if stream is None or not stream.config["allow_direct"]:
        return False
    if not reply:
        return True
    status = _DIRECT_STATUS
    if api_level_too_high(hdr):
        jsa.publish(reply, None, status["level"], b"")
        return True
    by_subject = len(tokens) > 5
    if not by_subject and not payload.strip():
        jsa.publish(reply, None, status["empty"], b"")
        return True
    try:
        req = decode_request(payload, MSG_GET_SCHEMA, "JSApiMsgGetRequest", strict=False) if payload.strip() else {}
        _parse_times(req)
    except ApiError:
        jsa.publish(reply, None, status["malformed"], b"")
        return True
    seq = req.get("seq", 0)
    last_for = req.get("last_by_subj", "")
    next_for = req.get("next_by_subj", "")
    multi = req.get("multi_last") or []
    start = "start_time" in req
    if by_subject:
        key = ".".join(tokens[5:])
        if (not key or last_for or next_for or multi or seq or req.get("batch", 0) or start
                or req.get("up_to_seq", 0) or "up_to_time" in req):
            jsa.publish(reply, None, status["bad"], b"")
            return True
        req["last_by_subj"] = key
    else:
        if not seq and not last_for and not next_for and not multi and not start:
            jsa.publish(reply, None, status["empty"], b"")
            return True
        batch = req.get("batch", 0)
        if ((seq > 0 and last_for) or (seq > 0 and start) or (start and last_for) or (last_for and next_for)
                or (last_for and batch > 0) or (last_for and multi) or (next_for and multi)
                or (req.get("up_to_seq", 0) > 0 and "up_to_time" in req)):
            jsa.publish(reply, None, status["bad"], b"")
            return True
    try:
        stream.direct_get(req, reply)
    except Exception:  # noqa: BLE001
        log.exception("JetStream direct get on %s failed", stream.name)
    return True


# ---- what a single server without snapshots cannot do ------------------------------------------------------------


def _clustering_required(type_name: str) -> Handler:
    def handler(jsa: JSAccount, tokens: list[str], reply: bytes | None, hdr: bytes | None, payload: bytes) -> None:
        _fail(jsa, reply, type_name, js_error("JSClusterRequiredErr"))

    return handler


def _snapshot_unsupported(type_name: str, extra: dict[str, Any]) -> Handler:
    """STREAM.SNAPSHOT / STREAM.RESTORE: the checks of nats-server (an empty request is a bad request), then a real
    request is refused with a clear error because the hub has no snapshots."""

    @_api(type_name, extra, empty=False)
    def refuse(jsa: JSAccount, T: str, tokens: list[str], reply: bytes | None, payload: bytes) -> None:
        _fail(jsa, reply, T, js_error("JSStreamGeneralErrorF",
                                      err="stream snapshots and restores are not supported by this server"), extra)

    return refuse


# ---- accounts without JetStream --------------------------------------------------------------------------------

# The response type (and the fields its struct always writes) of each API, for the 10039 answer nats-server gives
# in an account without JetStream: (group, operation, token count) -> (type suffix, extra fields).
_NOT_ENABLED: dict[tuple[str, str, int], tuple[str, dict[str, Any]]] = {
    ("INFO", "", 3): ("account_info_response", {}),
    ("STREAM", "CREATE", 5): ("stream_create_response", {}),
    ("STREAM", "UPDATE", 5): ("stream_update_response", {}),
    ("STREAM", "INFO", 5): ("stream_info_response", PAGED_ZERO),
    ("STREAM", "DELETE", 5): ("stream_delete_response", {}),
    ("STREAM", "PURGE", 5): ("stream_purge_response", PURGE_ZERO),
    ("STREAM", "NAMES", 4): ("stream_names_response", NAMES_ZERO),
    ("STREAM", "LIST", 4): ("stream_list_response", LIST_ZERO),
    ("STREAM", "SNAPSHOT", 5): ("stream_snapshot_response", {}),
    ("STREAM", "MSG", 6): ("", {}),  # GET or DELETE, below
    ("CONSUMER", "CREATE", 5): ("consumer_create_response", {}),
    ("CONSUMER", "CREATE", 6): ("consumer_create_response", {}),
    ("CONSUMER", "INFO", 6): ("consumer_info_response", {}),
    ("CONSUMER", "NAMES", 5): ("consumer_names_response", CONSUMERS_ZERO),
    ("CONSUMER", "LIST", 5): ("consumer_list_response", CONSUMERS_ZERO),
    ("CONSUMER", "DELETE", 6): ("consumer_delete_response", {}),
    ("CONSUMER", "PAUSE", 6): ("consumer_pause_response", PAUSE_ZERO),
}


# APIs nats-server refuses before it looks at the account (a single server has no leaders or peers).
_CLUSTER_ONLY: dict[tuple[str, str, int], str] = {
    ("STREAM", "LEADER.STEPDOWN", 6): "stream_leader_stepdown_response",
    ("STREAM", "PEER.REMOVE", 6): "stream_remove_peer_response",
    ("STREAM", "PEER.EVACUATE", 6): "stream_evacuate_peer_response",
    ("STREAM", "CANCEL_MOVE", 5): "stream_cancel_move_response",
    ("CONSUMER", "LEADER.STEPDOWN", 7): "consumer_leader_stepdown_response",
}


def not_enabled(acc_name: str, server: Any, subject: bytes, reply: bytes | None) -> bool:
    """`$JS.API.>` in an account without JetStream: the API's own response type with error 10039, as nats-server.
    Direct gets and pull requests reach nobody (503)."""
    tokens = subject.decode("utf-8", "replace").split(".")
    n = len(tokens)
    if n < 3:
        return True
    group = tokens[2]
    op = tokens[3] if n > 3 else ""
    if group == "DIRECT" or (group == "CONSUMER" and op == "MSG"):
        return False
    if group == "CONSUMER" and op == "CREATE" and n > 6:
        n = 6  # CREATE.<stream>.<consumer>.<filter...>
    if group == "CONSUMER" and op == "DURABLE" and n == 7 and tokens[4] == "CREATE":
        op, n = "CREATE", 6
    cluster_only = _CLUSTER_ONLY.get((group, ".".join(tokens[3:5]) if n > 5 else op, n))
    if cluster_only is not None:
        if reply:
            body = {"type": "io.nats.jetstream.api.v1." + cluster_only,
                    "error": js_error("JSClusterRequiredErr").body()}
            server.internal_publish(server.accounts[acc_name], reply, None, None, dumps(body))
        return True
    entry = _NOT_ENABLED.get((group, op, n))
    if entry is None or not reply:
        return True
    suffix, extra = entry
    if not suffix:
        if tokens[4] not in ("GET", "DELETE"):
            return True
        suffix = "stream_msg_get_response" if tokens[4] == "GET" else "stream_msg_delete_response"
    body = {"type": "io.nats.jetstream.api.v1." + suffix,
            "error": js_error("JSNotEnabledForAccountErr").body(), **extra}
    server.internal_publish(server.accounts[acc_name], reply, None, None, dumps(body))
    return True


# ---- consumers ---------------------------------------------------------------------------------------------------


def _consumer(jsa: JSAccount, tokens: list[str], reply: bytes | None, hdr: bytes | None, payload: bytes) -> bool:
    """Hand `$JS.API.CONSUMER.>` to consumer_api.py. A pull request (MSG.NEXT) for a consumer that does not
    exist reaches nobody in nats-server (503 to the requester), so it is not taken here either."""
    if len(tokens) >= 5 and tokens[3] == "MSG" and tokens[4] == "NEXT":
        if len(tokens) != 7:
            return False
        stream = jsa.streams.get(tokens[5])
        if stream is None or tokens[6] not in stream.consumers:
            return False
    try:  # consumer_api counts the requests nats-server counts
        consumer_api(jsa, tokens, reply, hdr, payload)
    except Exception:  # noqa: BLE001
        log.exception("JetStream consumer API request %s failed", ".".join(tokens))
    return True


_HANDLERS: dict[tuple[str, str, int], Handler] = {
    ("INFO", "", 3): account_info,
    ("STREAM", "CREATE", 5): stream_create,
    ("STREAM", "UPDATE", 5): stream_update,
    ("STREAM", "INFO", 5): stream_info,
    ("STREAM", "DELETE", 5): stream_delete,
    ("STREAM", "PURGE", 5): stream_purge,
    ("STREAM", "NAMES", 4): _stream_pages(full=False),
    ("STREAM", "LIST", 4): _stream_pages(full=True),
    ("STREAM", "SNAPSHOT", 5): _snapshot_unsupported(T_SNAPSHOT, {}),
    ("STREAM", "RESTORE", 5): _snapshot_unsupported(T_RESTORE, {"deliver_subject": ""}),
    ("STREAM", "CANCEL_MOVE", 5): _clustering_required("io.nats.jetstream.api.v1.stream_cancel_move_response"),
}
_MULTI_TOKEN: dict[tuple[str, ...], Handler] = {
    ("LEADER", "STEPDOWN"): _clustering_required("io.nats.jetstream.api.v1.stream_leader_stepdown_response"),
    ("PEER", "REMOVE"): _clustering_required("io.nats.jetstream.api.v1.stream_remove_peer_response"),
    ("PEER", "EVACUATE"): _clustering_required("io.nats.jetstream.api.v1.stream_evacuate_peer_response"),
}
_MSG_HANDLERS: dict[str, Handler] = {"GET": msg_get, "DELETE": msg_delete}

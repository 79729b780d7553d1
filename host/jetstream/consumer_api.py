"""The `$JS.API.CONSUMER.>` requests (nats-server `jetstream_api.go` jsConsumer*Request): create/update, info,
names/list, delete, pause, reset, and pull requests handed to their consumer. api.py routes them here.

Malformed subjects get no reply, as with nats-server, and like pull requests (served by the consumer's own
subscription in nats-server) they do not count in the account's API total.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from host.delivery import has_interest
from host.gotime import ZERO_TIME, time_text
from host.jetstream.consumer import ADV_CREATED, Consumer, ephemeral_name, lookup, watch
from host.jetstream.consumer_config import (
    apply_defaults,
    check_config,
    filters_of,
    is_valid_group_name,
    parse_create_request,
    subjects_overlap,
    update_error,
)
from host.jetstream.errors import ApiError, js_error
from host.jetstream.gojson import check_empty_request, decode_request, is_json_object_or_array
from host.jetstream.store import (
    ACK_EXPLICIT,
    StoreError,
)
from host.jetstream.stream_config import LIST_LIMIT, MAX_NAME_LEN, NAMES_LIMIT, is_valid_asset_name
from host.jetstream.versioning import api_level_too_high, check_api_level, set_static_consumer_metadata

if TYPE_CHECKING:
    from host.jetstream.jetstream import JSAccount


# API response types.
T_CREATE = "io.nats.jetstream.api.v1.consumer_create_response"
T_INFO = "io.nats.jetstream.api.v1.consumer_info_response"
T_NAMES = "io.nats.jetstream.api.v1.consumer_names_response"
T_LIST = "io.nats.jetstream.api.v1.consumer_list_response"
T_DELETE = "io.nats.jetstream.api.v1.consumer_delete_response"
T_PAUSE = "io.nats.jetstream.api.v1.consumer_pause_response"
T_RESET = "io.nats.jetstream.api.v1.consumer_reset_response"
T_STEPDOWN = "io.nats.jetstream.api.v1.consumer_leader_stepdown_response"
T_UNPIN = "io.nats.jetstream.api.v1.consumer_unpin_response"

# The fields nats-server's response structs always write, so its error answers carry them too.
CONSUMERS_ZERO: dict[str, Any] = {"total": 0, "offset": 0, "limit": 0, "consumers": []}
PAUSE_ZERO: dict[str, Any] = {"paused": False, "pause_until": ZERO_TIME}


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
        elif op == "UNPIN" and n == 6:
            _unpin(jsa, tokens[4], tokens[5], reply, hdr, payload)
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
    check_api_level(hdr)
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
    lim = jsa.limits
    apply_defaults(cfg, st.config, pedantic, lim.js_max_ack_pending)
    check_config(cfg, st.config, lim.js_max_ack_pending)
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
    # nats-server addConsumer: the stream's max_consumers, or the account's when lower or the stream has none; so
    # the account's limit counts per stream, not for the account
    maxc = int(st.config.get("max_consumers") or 0)
    if maxc <= 0 or 0 < lim.js_max_consumers < maxc:
        maxc = lim.js_max_consumers
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
        name = ephemeral_name()
        while name in st.consumers:
            name = ephemeral_name()
    if not is_valid_asset_name(name):
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
        watch(c)
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
    c = lookup(jsa, stream, name)
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


def _consumer_or_error(jsa: JSAccount, stream: str, name: str) -> Consumer:
    c = _stream_or_error(jsa, stream).consumers.get(name)
    if not isinstance(c, Consumer) or c.closed:
        raise js_error("JSConsumerNotFoundErr")
    return c


def _bodiless(jsa: JSAccount, type_name: str, stream: str, name: str, reply: bytes | None, hdr: bytes | None,
              payload: bytes) -> Consumer | None:
    """The consumer an INFO or DELETE request names (neither takes a body), or None when it was answered with an
    error. nats-server looks at the body before the API level for INFO, after it for DELETE."""
    try:
        if type_name == T_INFO:
            check_empty_request(payload)
        check_api_level(hdr)
        if type_name == T_DELETE:
            check_empty_request(payload)
        return _consumer_or_error(jsa, stream, name)
    except ApiError as e:
        jsa.respond_error(reply, type_name, e)
        return None


def _info(jsa: JSAccount, stream: str, name: str, reply: bytes | None, hdr: bytes | None, payload: bytes) -> None:
    c = _bodiless(jsa, T_INFO, stream, name, reply, hdr, payload)
    if c is None:
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
        check_api_level(hdr)
        offset = _offset(payload)
        st = _stream_or_error(jsa, stream)
    except ApiError as e:
        jsa.respond_error(reply, type_name, e, CONSUMERS_ZERO)
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
    c = _bodiless(jsa, T_DELETE, stream, name, reply, hdr, payload)
    if c is None:
        return
    c.delete_consumer(advisory=True)
    jsa.respond(reply, {"type": T_DELETE, "success": True})


def _pause(jsa: JSAccount, stream: str, name: str, reply: bytes | None, hdr: bytes | None, payload: bytes) -> None:
    try:
        until: int | None = None
        if is_json_object_or_array(payload):
            until = decode_request(payload, {"pause_until": "time"}, "JSApiConsumerPauseRequest").get("pause_until")
        check_api_level(hdr)
        c = _consumer_or_error(jsa, stream, name)
    except ApiError as e:
        jsa.respond_error(reply, T_PAUSE, e, PAUSE_ZERO)
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


def _unpin(jsa: JSAccount, stream: str, name: str, reply: bytes | None, hdr: bytes | None, payload: bytes) -> None:
    """CONSUMER.UNPIN `{"group": g}`: drop the consumer's pin, so the next pull takes a new one (nats-server
    jsConsumerUnpinRequest, with its order of checks: level, body, group name, stream, consumer, group)."""
    try:
        check_api_level(hdr)
        if not payload.strip():  # json.Unmarshal, unlike the other consumer APIs, takes no empty body
            raise js_error("JSInvalidJSONErr", err="unexpected end of JSON input")
        group = decode_request(payload, {"group": "string"}, "JSApiConsumerUnpinRequest", strict=False).get("group", "")
        if not group:
            raise js_error("JSInvalidJSONErr", err="consumer group not specified")
        if not is_valid_group_name(group):
            raise js_error("JSConsumerInvalidGroupNameErr")
        c = _consumer_or_error(jsa, stream, name)
        if group not in c.cfg["priority_groups"]:
            raise js_error("JSConsumerInvalidPriorityGroupErr")
    except ApiError as e:
        jsa.respond_error(reply, T_UNPIN, e)
        return
    c.unpin(group, "admin")
    jsa.respond(reply, {"type": T_UNPIN})


def _reset(jsa: JSAccount, stream: str, name: str, reply: bytes | None, hdr: bytes | None, payload: bytes) -> None:
    """CONSUMER.RESET: start over at a sequence (or just after the ack floor), forgetting pending acks."""
    if not reply:
        return
    c = lookup(jsa, stream, name)
    if c is None:
        return  # nats-server: the consumer's subscription answers, so a missing consumer gets no reply
    try:
        check_api_level(hdr)
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

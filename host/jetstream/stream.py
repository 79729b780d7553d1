"""A JetStream stream on the hub: the publish path, retention, direct get (nats-server `stream.go`); its config is
checked in stream_config.py.

A Stream owns its store (memstore.py or filestore.py) and subscribes its subjects in its account with
internal callbacks, so a message published by a client, a leaf or the hub itself reaches `_on_publish` inside the
publisher's read batch. There the Nats-* headers are checked in nats-server's order, the message is stored, the
PubAck is queued to the reply subject, and the consumers hear of the new sequence (`c.on_msg`).

The per-message path is kept lean: a message without headers skips every header check; PubAcks are built from a
prepared prefix (no JSON encoding per message); the subject is decoded once per message.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import shutil
import time
from typing import TYPE_CHECKING, Any

from host import msgtrace
from host.gotime import NS, parse_duration, rfc3339
from host.headers import HDR_LINE, hdr_append, hdr_get, hdr_remove, hdr_set, status_header
from host.jetstream.errors import JS_API_ERRORS, ApiError, js_error
from host.jetstream.filestore import FileStore, atomic_write
from host.jetstream.gojson import dumps
from host.jetstream.memstore import MemStore
from host.jetstream.sourcing import SourceLink, source_positions
from host.jetstream.store import (
    SYNC_ALWAYS,
    TTL_NEVER,
    ErrBadMsg,
    ErrStoreEOF,
    ErrStoreMsgNotFound,
    ErrTooManyResults,
    StoredMsg,
    StoreError,
    StreamStore,
)
from host.jetstream.stream_config import (
    is_literal,
    is_valid_subject,
    sorted_metadata,
    source_iname,
    store_config,
    subject_matches,
)
from host.jetstream.versioning import dynamic_metadata
from host.msgtrace import TRACE_DEST, TRACE_DISABLED, MsgTrace
from host.subject_transform import SubjectTransform

if TYPE_CHECKING:
    import asyncio

    from host.jetstream.jetstream import JSAccount


log = logging.getLogger("natsedge.hub")

MAX_HEADER_LEN = 65535
MULTI_LAST_MAX = 1024  # nats-server getDirectMulti maxAllowedResponses
_NOT_FOUND = status_header(404, "Message Not Found")
_NO_RESULTS = status_header(404, "No Results")
META_FILE = "meta.json"

# Request headers (nats-server stream.go constants), with the CRLF that precedes every header line.
H_MSG_ID = b"\r\nNats-Msg-Id:"
H_EXPECTED_STREAM = b"\r\nNats-Expected-Stream:"
H_EXPECTED_LAST_SEQ = b"\r\nNats-Expected-Last-Sequence:"
H_EXPECTED_LAST_SUBJ_SEQ = b"\r\nNats-Expected-Last-Subject-Sequence:"
H_EXPECTED_LAST_SUBJ_SEQ_SUBJ = b"\r\nNats-Expected-Last-Subject-Sequence-Subject:"
H_EXPECTED_LAST_MSG_ID = b"\r\nNats-Expected-Last-Msg-Id:"
H_ROLLUP = b"\r\nNats-Rollup:"
H_TTL = b"\r\nNats-TTL:"
H_INCR = b"\r\nNats-Incr:"
H_SCHEDULE = b"\r\nNats-Schedule:"
H_STREAM_SOURCE = b"\r\nNats-Stream-Source:"
H_REQUEST_INFO = b"\r\nNats-Request-Info:"
_NATS_PREFIX = b"\r\nNats-"


def parse_msg_ttl(value: bytes) -> int:
    """nats-server parseMessageTTL: seconds (> 0), TTL_NEVER for "never", 0 for none; ValueError if invalid."""
    text = value.decode("utf-8", "replace")
    if text.lower() == "never":
        return TTL_NEVER
    try:
        ns = parse_duration(text)
    except ValueError:
        if not text.isdigit() or not text.isascii():
            raise ValueError("invalid per-message TTL") from None
        return int(text)
    if ns < NS:
        raise ValueError("invalid per-message TTL")
    return ns // NS


def _pubkey(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _transform(cfg: dict[str, Any] | None) -> SubjectTransform | None:
    """The transform of a stream's `subject_transform` or `republish` config (checked when the stream was
    configured); None when there is none, it has no destination (nats-server NewSubjectTransform makes none
    then) or it maps every subject onto itself."""
    if cfg is None or not cfg.get("dest"):
        return None
    src, dest = cfg.get("src") or ">", cfg["dest"]
    if src == ">" and dest == ">":
        return None
    return SubjectTransform(src, dest)


def _match(tr: SubjectTransform, subject: str) -> str | None:
    """nats-server subjectTransform.Match: the subject mapped, or None when it is not under the source or the
    result is not a subject one can publish to."""
    if tr.src != ">" and not subject_matches(tr.src, subject):
        return None
    out = tr.transform(subject.encode().split(b".")).decode()
    return out if is_valid_subject(out) and is_literal(out) else None


# ---- the stream --------------------------------------------------------------------------------------------------


# The errors nats-server's processJetStreamMsg returns where its PubAck has these API errors (a traced message's `js`
# error); the others are the API error as Go prints an ApiError, "description (err_code)".
_STORE_ERRORS = {JS_API_ERRORS[name][1]: text for name, text in (
    ("JSStreamMessageExceedsMaximumErr", "maximum payload exceeded"),  # ErrMaxPayload
    ("JSStreamHeaderExceedsMaximumErr", "maximum payload exceeded"),
    ("JSStreamNotMatchErr", "expected stream does not match"),  # errStreamMismatch
    ("JSMessageTTLDisabledErr", "message TTL disabled"),  # errMsgTTLDisabled
)}

class Stream:
    """One stream: config, store, subscriptions, dedupe window, consumers (see js-contract for the interface)."""

    def __init__(self, jsa: JSAccount, cfg: dict[str, Any], created: int, store: StreamStore,
                 sdir: str | None) -> None:
        self.jsa = jsa
        self.name: str = cfg["name"]
        self.config = cfg
        self.created = created
        self.store = store
        self.dir = sdir
        self.consumers: dict[str, Any] = {}
        self.closed = False
        self._subs: dict[str, Any] = {}
        # Dedupe: Nats-Msg-Id -> (seq, ts ns), in insertion (= time) order, trimmed from the front.
        self._dedupe: dict[bytes, tuple[int, int]] = {}
        self.lmsg_id: bytes = b""
        self._expiry: asyncio.TimerHandle | None = None
        self._expiry_at = 0
        self._group: Any = None  # an open store.group_commit() (sync "always", inside a read batch)
        self.mirror_link: SourceLink | None = None
        self.source_links: dict[str, SourceLink] = {}  # by source_iname
        self._apply_config(cfg)

    # -- creating, recovering, deleting

    @classmethod
    def create(cls, jsa: JSAccount, cfg: dict[str, Any]) -> Stream:
        """A new stream from a checked config (its metadata already set)."""
        created = time.time_ns()
        sdir = None
        if cfg["storage"] == "file":
            sdir = os.path.join(jsa.dir, "streams", cfg["name"])
            if os.path.exists(sdir):
                # A stream that could not be recovered at start (or a delete that could not finish): keep its
                # files for inspection under another name; the new stream starts empty.
                aside = f"{sdir}.unrecovered-{created}"
                os.rename(sdir, aside)
                log.warning("JetStream: %s existed; moved to %s before creating stream '%s'", sdir, aside, cfg["name"])
            os.makedirs(sdir, exist_ok=True)
            store: StreamStore = FileStore(store_config(cfg, sdir, jsa.js.sync))
        else:
            store = MemStore(store_config(cfg, None, jsa.js.sync))
        stream = cls(jsa, cfg, created, store, sdir)
        if sdir is not None:
            stream.write_meta()
        stream._activate()
        return stream

    @classmethod
    def recover(cls, jsa: JSAccount, sdir: str) -> Stream | None:
        """Open a file stream from its directory (meta.json + store); None if there is no meta.json."""
        path = os.path.join(sdir, META_FILE)
        try:
            with open(path, "rb") as f:
                meta = json.loads(f.read())
        except FileNotFoundError:
            log.warning("JetStream: %s has no %s; skipped", sdir, META_FILE)
            return None
        cfg = meta["config"]
        created = int(meta["created"])
        if cfg.get("name") != os.path.basename(sdir):
            raise ValueError(f"{path} describes stream {cfg.get('name')!r}")
        store = FileStore(store_config(cfg, sdir, jsa.js.sync))
        stream = cls(jsa, cfg, created, store, sdir)
        stream._rebuild_dedupe()
        stream._activate()
        stream.expire_now()
        return stream

    def write_meta(self) -> None:
        if self.dir is not None:
            atomic_write(os.path.join(self.dir, META_FILE),
                         dumps({"config": self.config, "created": self.created}))

    def _activate(self) -> None:
        self.jsa.streams[self.name] = self
        self._subscribe(self.config.get("subjects", []))
        self._link_sources()

    def _link_sources(self) -> None:
        """Start reading the mirror and the sources of the config (sourcing.py), each from where the stream left
        it; stop reading sources the config no longer has."""
        mirror = self.config.get("mirror")
        if mirror is not None and self.mirror_link is None:
            self.mirror_link = SourceLink(self, mirror, mirror=True)
            self.mirror_link.start(self.store.last_seq + 1)
        wanted = {source_iname(src): src for src in self.config.get("sources") or []}
        for iname in [i for i in self.source_links if i not in wanted]:
            self.source_links.pop(iname).stop()
        new = [i for i in wanted if i not in self.source_links]
        if not new:
            return
        positions = source_positions(self, set(new))
        for iname in new:
            link = SourceLink(self, wanted[iname], mirror=False)
            if iname in positions:
                link.sseq = positions[iname]
                link.recovered = True
            self.source_links[iname] = link
            link.start(link.sseq + 1)

    def _subscribe(self, subjects: list[str]) -> None:
        acc = self.jsa.account
        for s in [s for s in self._subs if s not in subjects]:
            sub = self._subs.pop(s)
            sub.closed = True
            acc.remove_sub(sub)
        for s in subjects:
            if s not in self._subs:
                self._subs[s] = acc.add_internal(s.encode(), self._on_publish, traced=True)

    def _apply_config(self, cfg: dict[str, Any]) -> None:
        """Cache what the per-message path reads, so it does not look into the config dict."""
        self.config = cfg
        self.retention: str = cfg["retention"]
        self.is_memory = cfg["storage"] == "memory"
        self._sealed = cfg["sealed"]
        self._max_msg_size = cfg["max_msg_size"]
        self._allow_ttl = cfg["allow_msg_ttl"]
        self._sdm_ttl = cfg.get("subject_delete_marker_ttl", 0) // NS
        self._max_per = cfg["max_msgs_per_subject"]
        self._rollup_ok = cfg["allow_rollup_hdrs"] and not cfg["deny_purge"]
        self._dup_window = cfg.get("duplicate_window", 0)
        self._max_age = cfg["max_age"]
        self._no_ack = bool(cfg.get("no_ack"))
        self._interest = self.retention == "interest"
        js = self.jsa.js
        self._limit_checked = js.limits_set[0 if self.is_memory else 1]
        # sync "always": the messages of one read batch share an fsync, done before their PubAcks leave
        self._group_sync = not self.is_memory and js.sync == SYNC_ALWAYS
        # nats-server's mset.itr (applied to each received subject) and mset.tr (republish after the store)
        self._itr = _transform(cfg.get("subject_transform"))
        self._rtr = _transform(cfg.get("republish"))
        self._republish_hdrs_only = bool(cfg.get("republish", {}).get("headers_only"))
        # Conditions the header-less fast path must not see.
        self._slow = (self._sealed or self._interest or self._limit_checked or self._no_ack or self._group_sync
                      or self._itr is not None or self._rtr is not None)
        # nats-server's PubAck template (addStreamWithAssignmentAndMode) names the server's JetStream domain
        domain = ',"domain":' + _pubkey(js.domain) if js.domain else ""
        self._ack_prefix = ('{"stream":' + _pubkey(self.name) + domain + ',"seq":').encode()
        self._ack_dup_suffix = b',"duplicate": true}'

    def update(self, cfg: dict[str, Any]) -> None:
        """Apply a checked new config: subjects, store limits, cached settings, meta.json."""
        old = self.config
        self._apply_config(cfg)
        self.store.update_config(store_config(cfg, self.dir, self.jsa.js.sync))
        if cfg.get("subjects") != old.get("subjects"):
            self._subscribe(cfg.get("subjects", []))
        if cfg.get("sources") != old.get("sources"):
            self._link_sources()
        if cfg.get("duplicate_window", 0) != old.get("duplicate_window", 0):
            self._trim_dedupe(time.time_ns())
        self.write_meta()
        self._notify_purge()
        self.expire_now()

    def _unsubscribe_all(self) -> None:
        acc = self.jsa.account
        for sub in self._subs.values():
            sub.closed = True
            acc.remove_sub(sub)
        self._subs.clear()

    def _close(self) -> None:
        """Take no more messages: subjects released, expiry timer cancelled."""
        self.closed = True
        self._unsubscribe_all()
        for link in [self.mirror_link, *self.source_links.values()]:
            if link is not None:
                link.stop()
        self.mirror_link = None
        self.source_links.clear()
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None

    def stop(self) -> None:
        """Server shutdown: stop consumers (they persist), sync and close the store."""
        if self.closed:
            return
        self._close()
        for c in list(self.consumers.values()):
            try:
                c.stop()
            except Exception:  # noqa: BLE001 - one consumer must not keep the store open
                log.exception("JetStream: stopping a consumer of '%s' failed", self.name)
        try:
            self.store.stop()
        except OSError as e:
            log.error("JetStream: closing the store of '%s' failed: %s", self.name, e)

    def delete(self) -> None:
        """STREAM.DELETE: consumers deleted, store and directory removed, subjects released."""
        self._close()
        for c in list(self.consumers.values()):
            try:
                c.delete()
            except Exception:  # noqa: BLE001
                log.exception("JetStream: deleting a consumer of '%s' failed", self.name)
        self.consumers.clear()
        self.jsa.streams.pop(self.name, None)
        self.store.delete()
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)

    def sync(self) -> None:
        if not self.closed and not self.is_memory:
            try:
                self.store.sync()
            except OSError as e:
                log.error("JetStream: sync of '%s' failed: %s", self.name, e)
        for c in list(self.consumers.values()):
            flush = getattr(c, "flush", None)
            if flush is not None:
                flush()

    # -- publishing

    def _on_publish(self, src: Any, subject: bytes, reply: bytes | None, hdr: bytes | None,
                    payload: bytes) -> None:
        """A message published to one of the stream's subjects (nats-server processJetStreamMsg). Runs inside the
        publisher's read batch: nothing may escape from here, whatever the message or a consumer does."""
        try:
            subj = subject.decode()
        except UnicodeDecodeError:
            if reply and not self._no_ack:
                self._ack_error(reply, js_error("JSStreamStoreFailedF", err="subject is not valid UTF-8"))
            return
        trace = msgtrace.active
        msgtrace.active = None  # taken: what this store step sends on (consumer deliveries, acks) is not traced
        try:
            if trace is not None:
                # A traced message (host/msgtrace.py): its event lists the stream, and is sent once this is done.
                trace.jetstream(self.name)
                self._process(subj, reply, hdr, payload, trace)
                return
            # The account's limit is read per message, not cached: a pushed account JWT may change it.
            if hdr is not None or self._slow or self.jsa.storage_limited(self.is_memory):
                self._process(subj, reply, hdr, payload)
                return
            # Fast path: no headers, nothing that needs the checks of _process.
            mms = self._max_msg_size
            if 0 <= mms < len(payload):
                if reply:
                    self._ack_error(reply, js_error("JSStreamMessageExceedsMaximumErr"))
                return
            stored = self._store(subj, None, payload, 0, reply)
            if stored is None:
                return
            seq, ts = stored
            if reply:
                self.jsa.reply_plain(reply, self._ack_prefix + b"%d}" % seq)
            if self._max_age and (self._expiry is None or ts + self._max_age < self._expiry_at):
                self._arm_expiry(ts + self._max_age)
            if self.consumers:
                self._notify_msg(seq, subj)
        except Exception:  # noqa: BLE001 - a bug here must not break the publisher's connection
            log.exception("JetStream: processing a message for stream '%s > %s' failed", self.jsa.account.name,
                          self.name)

    def _notify_msg(self, seq: int, subject: str) -> None:
        for c in list(self.consumers.values()):
            try:
                c.on_msg(seq, subject)
            except Exception:  # noqa: BLE001 - one consumer's failure must not reach the publisher or the others
                log.exception("JetStream: consumer of '%s' failed on message %d", self.name, seq)

    def _refuse(self, trace: MsgTrace | None, reply: bytes | None, err: ApiError) -> None:
        """A message the stream does not take: the error in the PubAck the publisher asked for, and in the `js`
        event of a traced message, worded as nats-server's processJetStreamMsg returns it."""
        if trace is not None:
            trace.stored("", error=_STORE_ERRORS.get(err.err_code) or f"{err.description} ({err.err_code})")
        if reply:
            self._ack_error(reply, err)

    def _ack_error(self, reply: bytes, err: ApiError) -> None:
        self.jsa.publish(reply, None, None, dumps({"error": err.body(), "stream": self.name, "seq": 0}))

    def _store_failed(self, reply: bytes | None, e: Exception) -> None:
        log.error("JetStream failed to store a msg on stream '%s > %s': %s", self.jsa.account.name, self.name, e)
        if reply:
            self._ack_error(reply, js_error("JSStreamStoreFailedF", err=str(e)))

    def _process(self, subject: str, reply: bytes | None, hdr: bytes | None, payload: bytes,
                 trace: MsgTrace | None = None, sourced: bool = False) -> bool:
        """The full publish path: header checks in nats-server's order, limits, store, ack, consumers. A traced
        message (host/msgtrace.py) is checked as any; trace-only, it stops before the store; else it is stored with
        tracing switched off, so a consumer delivering it starts no trace. `sourced`: a message of one of the
        stream's sources, with its Nats-Stream-Source header. True when the message was taken (stored, or a
        duplicate)."""
        if self.closed:
            return
        if self._itr is not None:
            subject = _match(self._itr, subject) or subject  # a subject outside the source stays as it is
        if trace is not None and not trace.only and hdr is not None:
            hdr = hdr_set(hdr, TRACE_DEST, TRACE_DISABLED)
        if self._no_ack:
            reply = None
        if self._sealed:
            self._refuse(trace, reply, js_error("JSStreamSealedErr"))
            return
        msg_id = b""
        rollup = b""
        ttl_raw: bytes | None = None
        if hdr is not None:
            if hdr[8:10] != b"\r\n":
                # A status in the first line ("NATS/1.0 503") is not stored (removeHeaderStatusIfPresent).
                i = hdr.find(b"\r\n")
                hdr = HDR_LINE + hdr[i + 2:] if i >= 0 else None
            if hdr is not None and H_REQUEST_INFO in hdr:
                hdr = hdr_remove(hdr, H_REQUEST_INFO)
        if hdr is not None and _NATS_PREFIX in hdr:
            err = self._check_headers(subject, reply, hdr, sourced)
            if err is not None:
                if err is not True:
                    self._refuse(trace, reply, err)
                return err is True
            msg_id = hdr_get(hdr, H_MSG_ID) or b""
            rollup = (hdr_get(hdr, H_ROLLUP) or b"").lower()
            ttl_raw = hdr_get(hdr, H_TTL)
        hlen = len(hdr) if hdr is not None else 0
        mms = self._max_msg_size
        if mms >= 0 and (hlen > mms or len(payload) > mms - hlen):
            self._refuse(trace, reply, js_error("JSStreamMessageExceedsMaximumErr"))
            return
        if hlen > MAX_HEADER_LEN:
            self._refuse(trace, reply, js_error("JSStreamHeaderExceedsMaximumErr"))
            return
        if self._limit_checked and self.jsa.js.over_limit(self.is_memory):
            log.warning("JetStream resource limits exceeded for server")
            self._refuse(trace, reply, js_error("JSInsufficientResourcesErr"))
            return
        if self.jsa.storage_limited(self.is_memory) and self.jsa.would_exceed(self.is_memory, self.store.msg_size(
                len(subject.encode()), hlen, len(payload))):
            log.warning("JetStream %s resource limits exceeded for account: \"%s\"",
                        "memory" if self.is_memory else "file", self.jsa.account.name)
            self._refuse(trace, reply, js_error("JSAccountResourcesExceededErr"))
            return
        store = self.store
        no_interest = self._interest and not self._has_interest(store.last_seq + 1, subject)
        if trace is not None:
            trace.stored(subject, no_interest)
            if trace.only:
                return
        if no_interest:
            # Nobody would ever read it: the sequence is used, nothing is stored (SkipMsgNoInterest).
            seq = store.last_seq + 1
            ts = time.time_ns()
            store.skip_msgs(seq, 1, ts)
            self.lmsg_id = msg_id
            if msg_id:
                self._store_msg_id(msg_id, seq, ts)
            if rollup and self._rollup_ok:
                self._rollup(subject, rollup, 0)
            if reply:
                self.jsa.reply_plain(reply, self._ack_prefix + b"%d}" % seq)
            return True
        ttl = 0
        if ttl_raw is not None:
            try:
                ttl = parse_msg_ttl(ttl_raw)
            except ValueError:
                if reply:
                    self._ack_error(reply, js_error("JSMessageTTLInvalidErr"))
                return
            if ttl > 0 and self._sdm_ttl > 0 and self._max_per != 1 and ttl < self._sdm_ttl:
                # A TTL shorter than the marker TTL could hide a marker; nats-server raises it.
                ttl = self._sdm_ttl
                hdr = hdr_append(hdr_remove(hdr, H_TTL), b"Nats-TTL: %d\r\n" % ttl)  # type: ignore[arg-type]
        if self._group_sync and self._group is None and self.jsa.server.reading is not None:
            self._begin_group()
        republish_to = _match(self._rtr, subject) if self._rtr is not None else None
        # the subject's previous sequence goes with the republished message, so readers can spot gaps
        last_seq = self.store.filtered_state(0, subject).last if republish_to else 0
        stored = self._store(subject, hdr, payload, ttl, reply)
        if stored is None:
            return False
        seq, ts = stored
        if republish_to:
            self._republish(republish_to, subject, hdr, payload, seq, ts, last_seq)
        self.lmsg_id = msg_id
        if msg_id:
            self._store_msg_id(msg_id, seq, ts)
        if rollup and self._rollup_ok:
            self._rollup(subject, rollup, 1)
        if reply:
            self.jsa.reply_plain(reply, self._ack_prefix + b"%d}" % seq)
        self._stored(seq, subject, ts, ttl)
        return True

    def _stored(self, seq: int, subject: str, ts: int, ttl: int) -> None:
        """After a message is stored (published, sourced or mirrored): its expiry armed, the consumers told."""
        if self._max_age and (self._expiry is None or ts + self._max_age < self._expiry_at):
            self._arm_expiry(ts + self._max_age)
        if ttl > 0 and self._allow_ttl:
            deadline = ts + ttl * NS
            if self._expiry is None or deadline < self._expiry_at:
                self._arm_expiry(deadline)
        if self.consumers:
            self._notify_msg(seq, subject)

    def store_sourced(self, subject: str, hdr: bytes, payload: bytes) -> bool:
        """A message of one of the stream's sources (sourcing.py), through the publish path: True when taken."""
        try:
            return self._process(subject, None, hdr, payload, sourced=True)
        except Exception:  # noqa: BLE001 - a bug here must not break the delivering connection
            log.exception("JetStream: storing a sourced message in '%s > %s' failed", self.jsa.account.name,
                          self.name)
            return False

    def store_mirrored(self, subject: str, hdr: bytes | None, payload: bytes, seq: int, ts: int) -> bool:
        """A message of the stream's mirror origin, stored under its origin sequence and timestamp (sequences the
        origin no longer has are skipped, as nats-server's skipMsgs). True when stored, or stored before."""
        store = self.store
        last = store.last_seq
        if seq <= last:
            return True
        ttl = 0
        if hdr is not None and self._allow_ttl:
            ttl_raw = hdr_get(hdr, H_TTL)
            if ttl_raw is not None:
                try:
                    ttl = parse_msg_ttl(ttl_raw)
                except ValueError:
                    ttl = 0
        try:
            if seq > last + 1:
                store.skip_msgs(last + 1, seq - last - 1)
            store.store_msg(subject, hdr, payload, ttl, ts)
        except (StoreError, OSError) as e:
            log.warning("Error processing inbound mirror message for '%s' > '%s': %s", self.jsa.account.name,
                        self.name, e)
            return False
        self._stored(seq, subject, ts, ttl)
        return True

    def _republish(self, dest: str, subject: str, hdr: bytes | None, payload: bytes, seq: int, ts: int,
                   last_seq: int) -> None:
        """nats-server processJetStreamMsg's republish: the stored message (or only its headers and size) on
        `dest`, with where it is stored added to its headers."""
        lines = b"Nats-Stream: %s\r\nNats-Subject: %s\r\nNats-Sequence: %d\r\nNats-Time-Stamp: %s\r\n" \
            b"Nats-Last-Sequence: %d\r\n" % (self.name.encode(), subject.encode(), seq, rfc3339(ts).encode(),
                                             last_seq)
        if self._republish_hdrs_only:
            lines += b"Nats-Msg-Size: %d\r\n" % len(payload)
            payload = b""
        self.jsa.publish(dest.encode(), None, hdr_append(hdr, lines), payload)

    def _begin_group(self) -> None:
        """Defer the fsync of this read batch's writes to one, run by the server before it sends the batch's
        output (Server.before_flush): pipelined publishes share an fsync and no PubAck leaves before it."""
        group = self.store.group_commit()
        group.__enter__()
        self._group = group
        self.jsa.server.before_flush.append(self._end_group)

    def _end_group(self) -> None:
        group, self._group = self._group, None
        if group is not None:
            try:
                group.__exit__(None, None, None)
            except OSError as e:
                log.error("JetStream: fsync of stream '%s > %s' failed: %s", self.jsa.account.name, self.name, e)

    def _check_headers(self, subject: str, reply: bytes | None, hdr: bytes,
                       sourced: bool = False) -> ApiError | bool | None:
        """The Nats-* request headers, in nats-server's order. An ApiError to answer with, True when the message
        is dropped after its answer was sent (a duplicate), None to go on."""
        incr = hdr_get(hdr, H_INCR)
        if incr is not None:
            if not re.fullmatch(rb"[+-]?[0-9]+", incr):
                return js_error("JSMessageIncrInvalidErr")
            return js_error("JSMessageIncrDisabledErr")
        exp_stream = hdr_get(hdr, H_EXPECTED_STREAM)
        if exp_stream and exp_stream.decode("utf-8", "replace") != self.name:
            return js_error("JSStreamNotMatchErr")
        ttl_raw = hdr_get(hdr, H_TTL)
        if ttl_raw is not None and not self._allow_ttl:
            try:
                ttl = parse_msg_ttl(ttl_raw)
            except ValueError:
                ttl = 0
            if ttl != 0:
                return js_error("JSMessageTTLDisabledErr")
        subj_seq = hdr_get(hdr, H_EXPECTED_LAST_SUBJ_SEQ)
        seq_subj = hdr_get(hdr, H_EXPECTED_LAST_SUBJ_SEQ_SUBJ)
        if subj_seq is not None:
            want = _parse_uint(subj_seq)
            if want is not None:
                target = seq_subj.decode("utf-8", "replace") if seq_subj else subject
                last = self.store.filtered_state(0, target).last
                if last != want:
                    return js_error("JSStreamWrongLastSequenceErrF", seq=last)
            elif seq_subj:
                return js_error("JSStreamExpectedLastSeqPerSubjectInvalid")
        elif seq_subj:
            return js_error("JSStreamExpectedLastSeqPerSubjectInvalid")
        last_seq = hdr_get(hdr, H_EXPECTED_LAST_SEQ)
        if last_seq is not None:
            want = _parse_uint(last_seq)
            if want is not None and want != self.store.last_seq:
                return js_error("JSStreamWrongLastSequenceErrF", seq=self.store.last_seq)
        if hdr_get(hdr, H_SCHEDULE):
            return js_error("JSMessageSchedulesDisabledErr")
        if not sourced and hdr_get(hdr, H_STREAM_SOURCE):
            return js_error("JSMessageSourceHdrNotAllowedErr")
        msg_id = hdr_get(hdr, H_MSG_ID)
        if msg_id:
            dup = self._dedupe.get(msg_id)
            if dup is not None and time.time_ns() - dup[1] < self._dup_window:
                if reply:
                    self.jsa.reply_plain(reply, self._ack_prefix + b"%d" % dup[0] + self._ack_dup_suffix)
                return True
        exp_id = hdr_get(hdr, H_EXPECTED_LAST_MSG_ID)
        if exp_id and exp_id != self.lmsg_id:
            return js_error("JSStreamWrongLastMsgIDErrF", id=self.lmsg_id.decode("utf-8", "replace"))
        rollup = hdr_get(hdr, H_ROLLUP)
        if rollup:
            rollup = rollup.lower()
            if not self._rollup_ok:
                return js_error("JSStreamRollupFailedF", err="rollup not permitted")
            if rollup not in (b"sub", b"all"):
                return js_error("JSStreamRollupFailedF",
                                err=f"rollup value invalid: {json.dumps(rollup.decode('utf-8', 'replace'))}")
        return None

    def _store(self, subject: str, hdr: bytes | None, payload: bytes, ttl: int,
               reply: bytes | None) -> tuple[int, int] | None:
        """Store one message -> (sequence, timestamp); on a store failure the publisher is answered (when it asked)
        and None is returned."""
        try:
            return self.store.store_msg(subject, hdr, payload, ttl)
        except StoreError as e:
            if reply:
                self._ack_error(reply, js_error("JSStreamStoreFailedF", err=str(e)))
        except OSError as e:
            self._store_failed(reply, e)
        return None

    def _has_interest(self, seq: int, subject: str) -> bool:
        for c in self.consumers.values():
            if c.needs(seq, subject):
                return True
        return False

    def _rollup(self, subject: str, kind: bytes, keep: int) -> None:
        """Nats-Rollup after the store: sub keeps the subject's newest `keep`, all the stream's."""
        try:
            if kind == b"sub":
                n = self.store.purge(subject, 0, keep)
            else:
                n = self.store.purge(None, 0, keep)
        except (StoreError, OSError) as e:
            log.error("JetStream: rollup on '%s' failed: %s", self.name, e)
            return
        if n:
            self._notify_purge()

    # -- dedupe

    def _store_msg_id(self, msg_id: bytes, seq: int, ts: int) -> None:
        if self._dup_window <= 0:
            return
        d = self._dedupe
        d.pop(msg_id, None)
        d[msg_id] = (seq, ts)
        if len(d) > 64 and len(d) % 64 == 0:
            self._trim_dedupe(ts)

    def _trim_dedupe(self, now: int) -> None:
        d = self._dedupe
        window = self._dup_window
        while d:
            first = next(iter(d))
            if now - d[first][1] < window:
                break
            del d[first]

    def _rebuild_dedupe(self) -> None:
        """nats-server rebuildDedupe: Msg-Ids of messages still inside the window, and the last message's id."""
        window = self._dup_window
        store = self.store
        last = store.last_seq
        if window <= 0 or store.total_msgs == 0:
            return
        seq = store.get_seq_from_time(time.time_ns() - window)
        while seq and seq <= last:
            try:
                sm, seq = store.load_next_msg(">", seq)
            except (ErrStoreEOF, ErrStoreMsgNotFound, ErrBadMsg):
                break
            mid = hdr_get(sm.hdr, H_MSG_ID) if sm.hdr else None
            if mid:
                self._store_msg_id(mid, sm.seq, sm.ts)
            if sm.seq == last:
                self.lmsg_id = mid or b""

    # -- expiry

    def _arm_expiry(self, at_ns: int) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
        self._expiry_at = at_ns
        self._expiry = self.jsa.call_later((at_ns - time.time_ns()) / NS, self._run_expiry)

    def expire_now(self) -> None:
        """Apply age limits and TTLs at once (after a restart or a config change) and re-arm the timer."""
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        self._run_expiry()

    def _run_expiry(self) -> None:
        """Remove what max_age and TTLs expire now; hand markers to consumers; re-arm for the next deadline."""
        self._expiry = None
        self._expiry_at = 0
        if self.closed:
            return
        try:
            done = self.store.expire(time.time_ns())
        except (StoreError, OSError) as e:
            log.error("JetStream: expiring messages of '%s' failed: %s", self.name, e)
            done = None
        if done is not None:
            if done.removed:
                self._notify_purge()
            if done.markers and self.consumers:
                for seq in done.markers:
                    self._notify_msg(seq, self.store.subject_for_seq(seq))
        nxt = self.store.next_expiry()
        if nxt:
            self._arm_expiry(nxt)

    # -- retention, called by consumers

    def ack_msg(self, consumer: Any, seq: int) -> None:
        """A consumer acknowledged seq: work queues drop it, interest streams drop it once nobody needs it."""
        if self.retention == "limits" or self.closed:
            return
        if self.retention == "interest":
            try:
                subject = self.store.subject_for_seq(seq)
            except StoreError:
                return
            for c in self.consumers.values():
                if c is not consumer and c.needs(seq, subject):
                    return
        try:
            self.store.remove_msg(seq)
        except (StoreError, OSError) as e:
            log.error("JetStream: removing acknowledged message %d of '%s' failed: %s", seq, self.name, e)

    def _notify_purge(self) -> None:
        for c in list(self.consumers.values()):
            c.on_purge()

    # -- API operations

    def purge(self, subject: str | None, seq: int, keep: int) -> int:
        n = self.store.purge(subject or None, seq, keep)
        self._notify_purge()
        return n

    def remove_msg(self, seq: int, erase: bool) -> None:
        """STREAM.MSG.DELETE: raises ApiError as nats-server answers (EOF past the end, not found below the first,
        10043 for a hole)."""
        store = self.store
        if seq > store.last_seq:
            raise js_error("JSStreamMsgDeleteFailedF", err=ErrStoreEOF.text)
        if seq < store.state().first_seq or seq == 0:
            raise js_error("JSStreamMsgDeleteFailedF", err=ErrStoreMsgNotFound.text)
        removed = store.erase_msg(seq) if erase else store.remove_msg(seq)
        if not removed:
            raise js_error("JSSequenceNotFoundErrF", seq=seq)
        self._notify_purge()

    # -- reporting

    def state_json(self, deleted: bool = False, subjects_filter: str | None = None) -> dict[str, Any]:
        st = self.store.state(deleted)
        d: dict[str, Any] = {
            "messages": st.msgs, "bytes": st.bytes, "first_seq": st.first_seq, "first_ts": rfc3339(st.first_ts),
            "last_seq": st.last_seq, "last_ts": rfc3339(st.last_ts),
        }
        if st.num_subjects:
            d["num_subjects"] = st.num_subjects
        if subjects_filter is not None:
            d["subjects"] = subjects_filter  # placeholder keeps the key order; the caller fills it in
        if st.num_deleted:
            d["num_deleted"] = st.num_deleted
        if deleted and st.deleted:
            d["deleted"] = st.deleted
        # (nats-server keeps direct consumers, which other streams' mirrors and sources read, out of the count)
        d["consumer_count"] = sum(1 for c in self.consumers.values() if not c.cfg.get("direct"))
        return d

    def info(self, dynamic: bool = True, cluster: bool = False, deleted: bool = False,
             domain: bool = True) -> dict[str, Any]:
        """StreamInfo: config (with the response-only metadata when dynamic), created, state, [domain], [cluster],
        ts. nats-server names the JetStream domain in every StreamInfo but the one answering a create."""
        d: dict[str, Any] = {
            "config": self._config_out(dynamic),
            "created": rfc3339(self.created),
            "state": self.state_json(deleted),
        }
        if domain and self.jsa.js.domain:
            d["domain"] = self.jsa.js.domain
        if cluster:
            d["cluster"] = {"leader": self.jsa.server.name}
        if self.mirror_link is not None:
            d["mirror"] = self.mirror_link.info()
        if self.source_links:
            d["sources"] = [link.info() for link in self.source_links.values()]
        d["ts"] = rfc3339(time.time_ns())
        return d

    def _config_out(self, dynamic: bool) -> dict[str, Any]:
        """The config as responses show it; `dynamic` adds the server's metadata keys. Metadata keys sorted (Go
        writes a map that way)."""
        if not dynamic:
            return sorted_metadata(self.config)
        out = dict(self.config)
        out["metadata"] = dict(sorted(dynamic_metadata(self.config.get("metadata"), self.jsa.server.version).items()))
        return out

    def detail(self, consumers: bool, config: bool) -> dict[str, Any]:
        """A /jsz stream_detail entry."""
        d: dict[str, Any] = {"name": self.name, "created": rfc3339(self.created),
                             "cluster": {"leader": self.jsa.server.name}}
        if config:
            d["config"] = sorted_metadata(self.config)
        d["state"] = self.state_json()
        if consumers and self.consumers:
            out = []
            for c in self.consumers.values():
                ci = dict(c.info())
                if not config:
                    ci.pop("config", None)
                out.append(ci)
            d["consumer_detail"] = out
        return d

    # -- message get

    def get_msg(self, req: dict[str, Any]) -> StoredMsg:
        """STREAM.MSG.GET lookup (request already validated); raises StoreError when there is no such message."""
        store = self.store
        seq = req.get("seq", 0)
        if "start_time" in req:
            seq = store.get_seq_from_time(req["start_time"])
        next_for = req.get("next_by_subj", "")
        if seq > 0 and not next_for:
            return store.load_msg(seq)
        if next_for:
            return store.load_next_msg(next_for, seq)[0]
        return store.load_last_msg(req.get("last_by_subj", ""))

    # -- direct get (nats-server getDirectRequest / getDirectMulti)

    def direct_get(self, req: dict[str, Any], reply: bytes) -> None:
        if req.get("multi_last"):
            self._direct_multi(req, reply)
            return
        store = self.store
        name = self.name.encode()
        seq = req.get("seq", 0)
        if "start_time" in req:
            seq = store.get_seq_from_time(req["start_time"])
        next_for = req.get("next_by_subj", "")
        last_for = req.get("last_by_subj", "")
        no_hdr = req.get("no_hdr", False)
        batch = req.get("batch", 0)
        is_batch = batch != 0  # a negative batch is a batch of nothing: just the EOB, as nats-server
        if not is_batch:
            batch = 1
        np = valid_through = 0
        if is_batch:
            np = store.num_pending(seq, next_for)
            valid_through = store.last_seq
        max_bytes = req.get("max_bytes", 0) or self.jsa.server.opts.max_pending
        sent_bytes = 0
        lseq = 0
        publish = self.jsa.publish
        for i in range(batch):
            try:
                if seq > 0 and not next_for:
                    if i == 0 and not is_batch:
                        sm = store.load_msg(seq)
                        seq += 1
                    else:
                        sm, seq = store.load_next_msg(">", seq)
                elif next_for:
                    sm, seq = store.load_next_msg(next_for, seq)
                else:
                    sm = store.load_last_msg(last_for)
            except StoreError:
                if batch > 1 and i > 0:
                    break
                publish(reply, None, _NOT_FOUND, b"")
                return
            hdr = None
            if not no_hdr:
                ts = rfc3339(sm.ts).encode()
                lines = b"Nats-Stream: %s\r\nNats-Subject: %s\r\nNats-Sequence: %d\r\nNats-Time-Stamp: %s\r\n" % (
                    name, sm.subject.encode(), sm.seq, ts)
                if is_batch:
                    if np > 0:
                        np -= 1
                    lines += b"Nats-Num-Pending: %d\r\nNats-Last-Sequence: %d\r\n" % (np, lseq)
                hdr = hdr_append(sm.hdr, lines)
            lseq = sm.seq
            publish(reply, None, hdr, sm.data)
            sent_bytes += len(sm.subject) + len(sm.hdr or b"") + len(sm.data)
            if sent_bytes >= max_bytes:
                break
        if is_batch:
            if store.last_seq > valid_through:
                np = store.num_pending(seq, next_for)
            publish(reply, None, status_header(204, "EOB", ("Nats-Num-Pending", np), ("Nats-Last-Sequence", lseq)), b"")

    def _direct_multi(self, req: dict[str, Any], reply: bytes) -> None:
        store = self.store
        publish = self.jsa.publish
        name = self.name.encode()
        max_bytes = req.get("max_bytes", 0) or self.jsa.server.opts.max_pending
        up_to = req.get("up_to_seq", 0)
        if "up_to_time" in req:
            up_to = store.get_seq_from_time(req["up_to_time"])
            if up_to <= store.state().first_seq:
                publish(reply, None, _NO_RESULTS, b"")
                return
            up_to -= 1
        if up_to == 0:
            up_to = store.last_seq
        try:
            seqs = store.multi_last_seqs(req["multi_last"], up_to, MULTI_LAST_MAX)
        except ErrTooManyResults:
            publish(reply, None, status_header(413, "Too Many Results"), b"")
            return
        if not seqs:
            publish(reply, None, _NO_RESULTS, b"")
            return
        min_seq = req.get("seq", 0)
        batch = req.get("batch", 0)
        np = len(seqs)
        lseq = sent = sent_bytes = 0
        for seq in seqs:
            if np > 0:
                np -= 1
            if seq < min_seq:
                continue
            try:
                sm = store.load_msg(seq)
            except StoreError:
                publish(reply, None, _NOT_FOUND, b"")
                return
            ts = rfc3339(sm.ts).encode()
            lines = (b"Nats-Stream: %s\r\nNats-Subject: %s\r\nNats-Sequence: %d\r\nNats-Time-Stamp: %s\r\n"
                     b"Nats-Num-Pending: %d\r\nNats-Last-Sequence: %d\r\n") % (
                name, sm.subject.encode(), sm.seq, ts, np, lseq)
            lseq = sm.seq
            publish(reply, None, hdr_append(sm.hdr, lines), sm.data)
            sent_bytes += len(sm.subject) + len(sm.hdr or b"") + len(sm.data)
            if sent_bytes >= max_bytes:
                break
            sent += 1
            if batch > 0 and sent >= batch:
                break
        publish(reply, None, status_header(204, "EOB", ("Nats-Num-Pending", np), ("Nats-Last-Sequence", lseq),
                                           ("Nats-UpTo-Sequence", up_to)), b"")


def stored_msg_json(sm: StoredMsg, no_hdr: bool) -> dict[str, Any]:
    """STREAM.MSG.GET's `message`: subject, seq, hdrs (base64, omitempty), data (base64, omitempty), time."""
    d: dict[str, Any] = {"subject": sm.subject, "seq": sm.seq}
    if sm.hdr and not no_hdr:
        d["hdrs"] = base64.b64encode(sm.hdr).decode()
    if sm.data:
        d["data"] = base64.b64encode(sm.data).decode()
    d["time"] = rfc3339(sm.ts)
    return d


_BAD_SEQ = (1 << 64) - 1  # nats-server: uint64(parseInt64(x)) of a value that is not a number


def _parse_uint(value: bytes) -> int | None:
    """An expected-sequence header as nats-server reads it: None when empty (not given), the number when it is
    digits, else a value no sequence can equal (so the expectation fails)."""
    if not value:
        return None
    if value.isdigit():
        return int(value)
    return _BAD_SEQ

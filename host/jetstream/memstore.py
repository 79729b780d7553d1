"""Memory storage for streams and consumers, as nats-server `server/memstore.go`.

Owns: where a memory stream's messages live (a dict seq -> StoredMsg) and the byte size a message counts for in
memory (nats-server `memStoreMsgSize`). Every rule (limits, purge, expiry, subject index) is `StreamStore`'s, in
`host/jetstream/store.py`. Nothing survives `stop()`.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from host.jetstream.store import ConsumerStore, StoreConfig, StoredMsg, StreamStore


def mem_msg_size(slen: int, hlen: int, dlen: int) -> int:
    """nats-server `memStoreMsgSize`: subject + headers + payload + 16 (seq and timestamp)."""
    return slen + hlen + dlen + 16


class MemStore(StreamStore):
    kind = "memory"
    msg_size = staticmethod(mem_msg_size)

    def __init__(self, cfg: StoreConfig, clock: Callable[[], int] = time.time_ns) -> None:
        super().__init__(cfg, clock)
        self._store: dict[int, StoredMsg] = {}
        if cfg.first_seq > 1:
            self._first, self._last = cfg.first_seq, cfg.first_seq - 1

    def _put(self, seq: int, ts: int, subject: str, sb: bytes, hdr: bytes, data: bytes, ttl: int) -> None:
        self._store[seq] = StoredMsg(subject, hdr or None, data, seq, ts)

    def _drop(self, seq: int, durable: bool) -> None:
        del self._store[seq]

    def _drop_below(self, seq: int) -> None:
        store = self._store
        if len(store) and seq > self._last:
            store.clear()
            return
        for x in [x for x in store if x < seq]:
            del store[x]

    def _drop_all(self) -> None:
        self._store.clear()

    def _get(self, seq: int) -> StoredMsg | None:
        return self._store.get(seq)

    def _info(self, seq: int) -> tuple[str, int, int] | None:
        sm = self._store.get(seq)
        if sm is None:
            return None
        return sm.subject, sm.ts, self.msg_size(len(sm.subject.encode()), len(sm.hdr or b""), len(sm.data))

    def _next_live(self, seq: int) -> int:
        store, last = self._store, self._last
        while seq <= last:
            if seq in store:
                return seq
            seq += 1
        return 0

    def _prev_live(self, seq: int) -> int:
        store, first = self._store, self._first
        while seq >= first and seq > 0:
            if seq in store:
                return seq
            seq -= 1
        return 0

    def consumer_store(self, name: str, ack_policy: str = "explicit", max_deliver: int = -1) -> ConsumerMemStore:
        self._check()
        o = ConsumerMemStore(name, ack_policy, max_deliver)
        self.register_consumer()
        o._on_stop = self.unregister_consumer
        return o

    def stop(self) -> None:
        if self._closed:
            return
        super().stop()
        self._store = {}
        self._reset_index()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"msgs={self._msgs} first={self._first} last={self._last}"
        return f"<MemStore {self.cfg.name!r} {state}>"


class ConsumerMemStore(ConsumerStore):
    """A consumer's state in memory only (nats-server consumerMemStore)."""


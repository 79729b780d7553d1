"""Frames from JetStream to subscribers: consumer deliveries, status messages and heartbeats go to the subscribers
of a deliver subject or inbox in the consumer's account (nats-server deliverMsg, with the stored message's subject
on the MSG line). Nothing here buffers or waits: frames are queued to the connections like any delivery.
"""

from __future__ import annotations

import random
from typing import Any

from edge.proto import encode_tail
from host.accounts import Account

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

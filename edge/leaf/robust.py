# edge/leaf/robust.py — when to dial the hub again: the retry policy on top of uplink.py, as
# umqtt.robust sits on umqtt.simple.
#
# Rules this file keeps:
# 1. Exponential backoff with jitter: the n-th consecutive failure waits a random time in
#    [d/2, d] with d = min(max_ms, min_ms * 2**n), so a fleet that lost its hub at one moment
#    does not come back in one herd. Each edge seeds its own generator from os.urandom.
# 2. A link that completed its handshake resets the backoff.
# 3. After -ERR 'Loop detected...' the wait is at least LOOP_WAIT_MS (the hub delays 30 s too).
# 4. The heap in use is logged with every "uplink down" line, so a test can see it stays flat
#    across reconnect cycles.
# 5. Every drop or failed dial moves to the next hub URL (uplink.py rule 6), after the same wait:
#    an edge whose hub node died dials another node of the cluster.

import asyncio
import gc
import os

from edge.compat import const, mem_alloc

LOOP_WAIT_MS = const(30000)


class Backoff:
    def __init__(self, min_ms=1000, max_ms=30000, seed=None):
        self.min_ms = max(1, min_ms)
        self.max_ms = max(self.min_ms, max_ms)
        self.failures = 0
        if seed is None:
            seed = int.from_bytes(os.urandom(4), "big")
        self._x = (seed & 0xFFFFFFFF) or 1

    def _rand(self, n):
        # xorshift32: small, and independent of the interpreter's shared random state.
        x = self._x
        x ^= (x << 13) & 0xFFFFFFFF
        x ^= x >> 17
        x ^= (x << 5) & 0xFFFFFFFF
        self._x = x
        return x % n if n > 0 else 0

    def next_ms(self):
        d = self.min_ms << min(self.failures, 20)
        if d > self.max_ms:
            d = self.max_ms
        self.failures += 1
        return d // 2 + self._rand(d - d // 2 + 1)

    def reset(self):
        self.failures = 0


async def keep_up(uplink, backoff, log):
    # Runs until cancelled (set uplink.stopped first).
    while not uplink.stopped:
        try:
            reason = await uplink.run_once()
        except Exception as e:  # e.g. a bad CA file: report it, keep the leaf and the retries going
            reason = "error %r" % e
        if uplink.was_up:
            backoff.reset()
        delay = backoff.next_ms()
        if uplink.loop_detected and delay < LOOP_WAIT_MS:
            delay = LOOP_WAIT_MS + backoff._rand(backoff.min_ms)
        uplink.next_url()
        gc.collect()
        log("uplink down heap=%d retry_ms=%d next=%s:%d reason=%s" % (mem_alloc(), delay, uplink.host, uplink.port,
                                                                     reason))
        await asyncio.sleep(delay / 1000)

# edge/kvcache/hlc.py — hybrid logical clock stamps for KV writes, and the wall clock they start from.
#
# A stamp is (wall ms since 1970, counter, node name); stamps compare as tuples, so two writes anywhere are
# always ordered the same way, and a tie on time and counter is broken by the node name. The text form
# "<ms>-<counter>-<node>" travels in the Edge-HLC header of every message an edge writes to the hub, so every
# edge (and anyone reading the hub) orders the writes identically. A hub message written by a plain client has
# no Edge-HLC: its stamp is (its stream timestamp in ms, 0, ""), which every edge derives the same way too.
#
# Rules this file keeps:
# 1. now() never goes backwards, even when the wall clock does (an ESP32 boots at 2000-01-01 until NTP runs):
#    the clock starts from the highest stamp the cache recovered from flash, and observe() pulls it forward
#    past every stamp seen from the hub.
# 2. Wall time is ms since 1970 on every port (the ESP32's time epoch is 2000).

import time

_EPOCH_OFFSET_S = 946684800 if time.gmtime(0)[0] == 2000 else 0


def wall_ms():
    return time.time_ns() // 1000000 + _EPOCH_OFFSET_S * 1000


def parse(text):
    # "<ms>-<counter>-<node>" -> (ms, counter, node), or None when malformed.
    if isinstance(text, bytes):
        text = text.decode()
    parts = text.split("-", 2)
    if len(parts) != 3 or not parts[0].isdigit() or not parts[1].isdigit():
        return None
    return (int(parts[0]), int(parts[1]), parts[2])


def format(stamp):
    return "%d-%d-%s" % stamp


class Clock:
    def __init__(self, node, wall=wall_ms):
        self.node = node
        self.wall = wall
        self.ms = 0
        self.counter = 0

    def now(self):
        pt = self.wall()
        if pt > self.ms:
            self.ms = pt
            self.counter = 0
        else:
            self.counter += 1
        return (self.ms, self.counter, self.node)

    def observe(self, stamp):
        # A stamp seen elsewhere (the hub, or recovered from flash): later local stamps sort after it.
        if stamp[0] > self.ms or (stamp[0] == self.ms and stamp[1] > self.counter):
            self.ms = stamp[0]
            self.counter = stamp[1]

# boards/esp32/edgeboard.py — what main.py runs: start the edge leaf from config.json and keep the board alive.
#
# It ships as lib/edgeboard.mpy in the bundle (or frozen into the firmware, firmware/manifest.py), so the board
# never compiles it at boot: compiling a .py takes about 2.5 times the heap of loading its .mpy (FACTS.md section 6),
# and at boot Wi-Fi has already taken its share.
#
# Rules this file keeps:
# 1. One config file, config.json, the same format as `micropython -m edge CONFIG.json`: edge/leaf/config.py checks
#    the edge's keys; this file reads only "board" and "wifi" (schema and defaults: docs/firmware.md).
# 2. A bad config or app is logged and the board stays at the REPL: resetting could not fix it and would loop.
# 3. Watchdog (machine.WDT, board.watchdog seconds) fed by an asyncio task: a wedged event loop resets the board.
# 4. Fatal errors, i.e. anything escaping the event loop or any task (MemoryError included; app and callback errors
#    are caught by the leaf and do not count), are logged to the console and to last_error.txt, then machine.reset()
#    after board.restart_delay seconds. Memory is released before anything is formatted.
# 5. Ctrl-C (mpremote, `natsedge deploy`, a person) is not fatal: it ends the program at the REPL, with the
#    watchdog stretched to 30 minutes (an ESP32 watchdog cannot be stopped) so a deploy is not cut short.
# 6. Status: every board.status seconds one JSON message on board.status_subject (default $EDGE.<name>.status)
#    through the leaf, so it reaches the hub whenever the uplink is up and the hub has interest; nothing is queued
#    while offline.
# 7. Whatever the unix port lacks (network, machine.WDT, machine.reset, reset_cause) is detected and skipped, so
#    the same file runs on a virtual board.

import asyncio
import gc
import json
import sys
import time

CONFIG = "config.json"
LAST_ERROR = "last_error.txt"
_REPL_WDT_MS = 1800000


def log(msg):
    sys.stdout.write("board: " + msg + "\n")


def _ms(d, key, default):
    v = d.get(key)
    if v is None:
        v = default
    try:
        return max(0, int(float(v) * 1000))
    except (TypeError, ValueError):
        log("board.%s: expected seconds, got %r; using %s" % (key, v, default))
        return int(default * 1000)


def _machine(name):
    try:
        import machine
    except ImportError:
        return None
    return getattr(machine, name, None)


class Board:
    def __init__(self, cfg, raw):
        b = raw.get("board") or {}
        if not isinstance(b, dict):
            log('"board": expected an object, got %r; using the defaults' % (b,))
            b = {}
        self.name = cfg["name"]
        self.wifi = raw.get("wifi") if isinstance(raw.get("wifi"), dict) else None
        self.status_ms = _ms(b, "status", 60)
        self.subject = b.get("status_subject") or "$EDGE.%s.status" % self.name
        self.watchdog_ms = _ms(b, "watchdog", 30)
        self.restart_ms = _ms(b, "restart_delay", 10)
        self.wifi_ms = _ms(b, "wifi_check", 10)
        self.node = None
        self.wdt = None
        self.fatal = None
        self.dead = asyncio.Event()
        self.uptime_ms = 0
        self.connects = 0
        self._link = None
        self.seq = 0
        rc = _machine("reset_cause")
        self.reset_cause = rc() if rc else None
        self.last_error = None
        try:
            with open(LAST_ERROR) as f:
                self.last_error = f.read(200)
        except OSError:
            pass

    # ---- watchdog, uptime, reconnect count ---------------------------------------------------------------------

    def start_watchdog(self):
        wdt = _machine("WDT")
        if wdt is None or not self.watchdog_ms:
            log("watchdog: %s" % ("off" if wdt else "not on %s" % sys.platform))
            return
        self.wdt = wdt(timeout=self.watchdog_ms)
        log("watchdog: %d ms" % self.watchdog_ms)

    def stretch_watchdog(self):
        if self.wdt is not None:
            self.wdt = _machine("WDT")(timeout=_REPL_WDT_MS)  # ESP32: reconfigures the running watchdog
            self.wdt.feed()
            log("watchdog stretched to %d min for the REPL" % (_REPL_WDT_MS // 60000))

    async def watch(self):
        step = min(1000, self.watchdog_ms // 4) if self.wdt else 1000
        last = time.ticks_ms()
        while True:
            if self.wdt is not None:
                self.wdt.feed()
            now = time.ticks_ms()
            self.uptime_ms += time.ticks_diff(now, last)  # summed, so it does not wrap with ticks_ms
            last = now
            self._track()
            await asyncio.sleep_ms(step)

    def _track(self):
        # Count uplink handshakes: each one is a new Link object. Comparing the object, not `up` going
        # False -> True, also counts a link that dropped and came back between two polls. Only the current
        # link is referenced, so nothing is kept alive.
        up = self.node.uplink
        link = up.link if up is not None and up.up else None
        if link is not None and link is not self._link:
            self.connects += 1
        self._link = link

    # ---- status ------------------------------------------------------------------------------------------------

    def status(self):
        gc.collect()
        node = self.node
        leaf = node.leaf
        up = node.uplink
        lst = node.listener
        self._track()
        connects = getattr(up, "connects", self.connects) if up else 0
        s = {
            "name": self.name,
            "seq": self.seq,
            "uptime_s": self.uptime_ms // 1000,
            "mem_free": gc.mem_free(),
            "mem_alloc": gc.mem_alloc(),
            "hub_up": bool(up and up.up),
            "connects": connects,
            "reconnects": max(0, connects - 1),
            "forwarded": up.forwarded if up else 0,
            "dropped": up.dropped if up else 0,
            "cb_dropped": leaf.cb_dropped,
            "subs": leaf.subs.count,
            "clients": len(lst.clients) if lst else 0,
            "platform": sys.platform,
            "micropython": "%d.%d.%d" % sys.implementation.version[:3],
            "reset_cause": self.reset_cause,
            "rssi": _rssi(),
        }
        if self.last_error:
            s["last_error"] = self.last_error
        return s

    async def report(self):
        leaf = self.node.leaf
        pub = getattr(leaf, "apublish", None)
        while True:
            self.seq += 1
            try:
                s = self.status()
                data = json.dumps(s)
                if pub is not None:
                    await pub(self.subject, data)
                else:
                    leaf.publish(self.subject, data)
                log("status seq=%d hub_up=%d mem_free=%d" % (s["seq"], s["hub_up"], s["mem_free"]))
            except Exception as e:  # e.g. LeafError for an invalid subject: log, keep the board up
                log("status not sent: %r" % e)
            s = data = None
            await asyncio.sleep_ms(self.status_ms)

    # ---- Wi-Fi -------------------------------------------------------------------------------------------------

    async def keep_wifi(self):
        # The ESP32 driver retries the last connect() by itself until disconnect() (ports/esp32/network_wlan.c);
        # this is the safety net for when it has stopped (status not CONNECTING): connect again, backing off to
        # 5 minutes while down.
        try:
            import network
        except ImportError:
            return
        wlan = network.WLAN(network.STA_IF)
        connecting = getattr(network, "STAT_CONNECTING", None)
        pause = self.wifi_ms
        while True:
            await asyncio.sleep_ms(pause)
            if wlan.isconnected():
                pause = self.wifi_ms
                continue
            if connecting is not None and wlan.status() == connecting:
                continue
            log("Wi-Fi down: joining %r" % self.wifi["ssid"])
            try:
                wlan.active(True)
                wlan.connect(self.wifi["ssid"], self.wifi.get("password") or "")
            except OSError as e:
                log("Wi-Fi connect raised %r" % e)
            pause = min(pause * 2, 300000)

    # ---- run ---------------------------------------------------------------------------------------------------

    def on_task_error(self, loop, context):
        # A task died with an exception nobody awaited: the edge may be half-dead (say, no uplink task), so
        # it is fatal. MicroPython calls this from the loop; main() raises it and resets.
        if self.fatal is None:
            self.fatal = context.get("exception") or RuntimeError(context.get("message", "task failed"))
        self.dead.set()

    async def run(self, cfg, app):
        from edge.leaf import runner

        asyncio.get_event_loop().set_exception_handler(self.on_task_error)
        self.node = await runner.start(cfg, app)
        tasks = [asyncio.create_task(self.watch())]
        if self.status_ms:
            tasks.append(asyncio.create_task(self.report()))
        if self.wifi and self.wifi.get("ssid") and self.wifi_ms:
            tasks.append(asyncio.create_task(self.keep_wifi()))
        log("edge %r up; status every %d ms on %s" % (self.name, self.status_ms, self.subject))
        try:
            await self.dead.wait()
            raise self.fatal
        finally:
            for t in tasks:
                t.cancel()


def _rssi():
    try:
        import network

        wlan = network.WLAN(network.STA_IF)
        return wlan.status("rssi") if wlan.isconnected() else None
    except (ImportError, OSError, ValueError):
        return None


def load():
    # -> (edge config, app module or None, raw JSON), or None after logging why.
    from edge.leaf import config

    r = config.prepare([CONFIG])
    if isinstance(r, str):
        log(r)
        return None
    with open(CONFIG) as f:
        raw = json.load(f)  # the leaf has just parsed it: it is readable JSON
    # The checker is needed once: drop it so its bytecode does not stay on the heap (as `micropython -m edge`).
    from edge.compat import drop_module

    for name in config.CHECKER_MODULES:
        drop_module(name)
    return r[0], r[1], raw


def fatal(board, e):
    # Release the edge before anything below allocates (the heap may be full): the board's reference, and the
    # old loop's queues, which still hold every task of the edge.
    board.node = None
    new_loop = getattr(asyncio, "new_event_loop", None)
    if new_loop is not None:
        new_loop()
    gc.collect()
    log("fatal: %r; restarting in %d s" % (e, board.restart_ms // 1000))
    sys.print_exception(e)
    try:
        with open(LAST_ERROR, "w") as f:
            sys.print_exception(e, f)
    except OSError:
        pass
    reset = _machine("reset")
    deadline = time.ticks_add(time.ticks_ms(), board.restart_ms)
    while time.ticks_diff(deadline, time.ticks_ms()) > 0:
        if board.wdt is not None:
            board.wdt.feed()
        time.sleep_ms(100)
    if reset is None:
        log("no machine.reset on %s: exiting" % sys.platform)
        sys.exit(1)
    reset()


def main():
    r = load()
    if r is None:
        log("not starting the edge; fix %s and reset the board" % CONFIG)
        return
    cfg, app, raw = r
    board = Board(cfg, raw)
    board.start_watchdog()
    try:
        asyncio.run(board.run(cfg, app))
    except KeyboardInterrupt:
        board.stretch_watchdog()
        lst = board.node.listener if board.node else None
        if lst is not None:
            lst.close()  # free the listen port for a later run from the REPL
        log("stopped by Ctrl-C")
    except Exception as e:
        fatal(board, e)

# boards/esp32/boot.py — runs first on every boot: join Wi-Fi from config.json, then get out of the way.
#
# Rules this file keeps:
# 1. No secrets in code: the SSID and password come from config.json "wifi" (docs/firmware.md has the schema).
# 2. It never blocks forever: at most wifi.tries attempts, each waiting up to wifi.timeout seconds, with a pause of
#    wifi.backoff * 2**n seconds (capped at wifi.backoff_max) between them. After the last one boot goes on and
#    main.py starts the edge offline; main.py keeps rejoining in the background.
# 3. A board without `network` (the unix port: a virtual board) or a config without "wifi" skips Wi-Fi with one
#    log line. The password rejected twice in a row ends the attempts: retrying cannot fix it.
# 4. After the last attempt the ESP32 driver is left retrying on its own (MicroPython's WLAN retries the last
#    connect() without limit by default), so Wi-Fi comes up whenever the access point does.
# 5. Log lines are whole "boot: ..." writes (MicroPython's print writes in pieces).

import sys
import time

CONFIG = "config.json"  # the filesystem root on ESP32 (cwd "/"), the board folder on the unix port


def log(msg):
    sys.stdout.write("boot: " + msg + "\n")


def _wifi_config():
    import json

    try:
        with open(CONFIG) as f:
            cfg = json.load(f)
    except (OSError, ValueError) as e:
        log("no usable %s (%r): Wi-Fi skipped" % (CONFIG, e))
        return None
    w = cfg.get("wifi") if isinstance(cfg, dict) else None
    if not isinstance(w, dict) or not w.get("ssid"):
        log("no wifi.ssid in %s: Wi-Fi skipped" % CONFIG)
        return None
    return w


def _seconds_ms(w, key, default):
    v = w.get(key)
    if v is None:
        v = default
    try:
        return max(0, int(float(v) * 1000))
    except (TypeError, ValueError):
        log("wifi.%s: expected seconds, got %r; using %s" % (key, v, default))
        return int(default * 1000)


def join(w, network):
    # Returns True once connected. The caller passes the `network` module (tests pass a fake one).
    tries = w.get("tries") or 5
    timeout_ms = _seconds_ms(w, "timeout", 15)
    pause_ms = _seconds_ms(w, "backoff", 1)
    pause_max_ms = _seconds_ms(w, "backoff_max", 30)
    wrong_password = getattr(network, "STAT_WRONG_PASSWORD", None)
    wlan = network.WLAN(network.STA_IF)
    wlan.active(True)
    if w.get("hostname"):
        try:
            network.hostname(w["hostname"])
        except (AttributeError, ValueError, OSError) as e:
            log("hostname %r not set: %r" % (w["hostname"], e))
    auth_failures = 0
    for attempt in range(1, tries + 1):
        if wlan.isconnected():
            break
        try:
            wlan.connect(w["ssid"], w.get("password") or "")
        except OSError as e:
            log("connect raised %r" % e)
        t0 = time.ticks_ms()
        while not wlan.isconnected() and time.ticks_diff(time.ticks_ms(), t0) < timeout_ms:
            time.sleep_ms(100)
        if wlan.isconnected():
            break
        status = wlan.status()
        log("attempt %d/%d to join %r failed (status %s)" % (attempt, tries, w["ssid"], status))
        # The ESP32 reports a plain connection failure with the same code as a wrong password
        # (ports/esp32/network_wlan.c), so only a second one in a row ends the attempts.
        auth_failures = auth_failures + 1 if status == wrong_password and wrong_password is not None else 0
        if auth_failures >= 2:
            log("Wi-Fi password rejected twice: not retrying")
            return False
        if attempt < tries:
            try:
                wlan.disconnect()  # stop the driver's own retries before our next connect()
            except OSError:
                pass
            time.sleep_ms(min(pause_max_ms, pause_ms << (attempt - 1)))
    if wlan.isconnected():
        log("joined %r, address %s" % (w["ssid"], wlan.ifconfig()[0]))
        return True
    # No disconnect(): the driver keeps retrying the last connect() in the background.
    log("no Wi-Fi after %d attempts: the edge starts offline, the driver keeps trying" % tries)
    return False


def boot():
    try:
        import network
    except ImportError:
        log("no network module on %s: Wi-Fi skipped" % sys.platform)
        return
    try:
        w = _wifi_config()
        if w is not None:
            join(w, network)
    except Exception as e:
        # The firmware runs main.py only if boot.py ends without an exception (ports/esp32/main.c), so nothing
        # about Wi-Fi may escape from here.
        log("Wi-Fi set-up failed: %r" % e)


boot()

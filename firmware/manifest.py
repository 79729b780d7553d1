# firmware/manifest.py — a MicroPython frozen manifest: the ESP32 port's own modules plus the natsedge edge.
#
# Used by the ESP-IDF build (docs/firmware.md has the exact commands; they cannot run in this workplace):
#   make -C ports/esp32 BOARD=ESP32_GENERIC FROZEN_MANIFEST=/abs/path/to/natsedge/firmware/manifest.py
# Frozen bytecode runs from flash, so the edge then costs no heap for its code and nothing in /lib.
#
# Rules this file keeps:
# 1. The port's default manifest comes first: without it the firmware loses asyncio, network helpers (mip,
#    ntptime, requests, webrepl), umqtt, dht, onewire, neopixel and the rest of ports/esp32/boards/manifest.py.
# 2. It freezes exactly what `natsedge firmware bundle` ships: the whole `edge` package and the board's modules
#    (boards/esp32 minus boot.py/main.py, which the firmware runs from the filesystem by name and deploy copies).
# 3. Relative paths resolve against this file's folder (tools/manifestfile.py), so the checkout can live anywhere.
#
# The functions below (include, package, module) are defined by MicroPython's tools/manifestfile.py when it
# executes this file; it is not a Python module of this project.
# ruff: noqa: F821

include("$(PORT_DIR)/boards/manifest.py")

package("edge", base_path="..")
module("edgeboard.py", base_path="../boards/esp32")

# boards/esp32/main.py — runs after boot.py: start the edge from config.json (boards/esp32/edgeboard.py).
#
# A few lines on purpose: the firmware compiles main.py from source at every boot, and compiling takes about
# 2.5 times the heap of loading bytecode, so the work lives in edgeboard, shipped as lib/edgeboard.mpy by
# `natsedge deploy` (or frozen into a custom firmware). Ctrl-C leaves it at the REPL; fatal errors reset the board.

import edgeboard

edgeboard.main()

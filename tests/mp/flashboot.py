# tests/mp/flashboot.py — boot the edge as a device would, with its data on an emulated ESP32 flash partition:
#
#   MICROPYPATH=<repo>:.frozen micropython tests/mp/flashboot.py IMAGE BLOCKS CONFIG.json
#
# IMAGE is a sim/flashfile.py FileFlash image file (created, formatted as littlefs, on first use) of BLOCKS 4 KB
# blocks, mounted at /flash; the config's "data" should point under /flash. Every flash operation reaches the image at
# once, so a SIGKILL of this process leaves the image as a power cut between two flash operations would.
import sys

if ".frozen" not in sys.path:
    sys.path.append(".frozen")  # MICROPYPATH replaced the default path, which held the frozen asyncio

from sim.flashfile import FileFlash, mount  # noqa: E402

mount(FileFlash(sys.argv[1], 4096, int(sys.argv[2])), "/flash")

from edge.leaf.runner import main  # noqa: E402

sys.exit(main(sys.argv[3:]))

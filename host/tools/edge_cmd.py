"""`natsedge edge CONFIG.json`: run the edge leaf broker on CPython from its JSON config.

The same file format runs `micropython -m edge CONFIG.json` on the unix port and on boards/esp32; the
code is edge/leaf/ itself. Exit codes: 0 after SIGINT/SIGTERM, 1 when start-up fails (e.g. the listen
port is taken), 2 for a bad config or app (one line on stderr naming the key, never a traceback).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="JSON config file (keys: name, hub, listen, data, app, limits, stats)")


async def serve_until_signal(cfg: dict, app) -> None:
    from edge.leaf.runner import serve

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await serve(cfg, app, stop)


def run(args: argparse.Namespace) -> int:
    from edge.leaf.config import prepare

    r = prepare([args.config])
    if isinstance(r, str):
        print(f"natsedge edge: {r}", file=sys.stderr)
        return 2
    try:
        asyncio.run(serve_until_signal(*r))
    except OSError as e:
        print(f"natsedge edge: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    _p = argparse.ArgumentParser(prog="natsedge edge")
    add_arguments(_p)
    sys.exit(run(_p.parse_args()))

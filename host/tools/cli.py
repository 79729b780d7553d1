"""The `natsedge` console command: one entry point, one subcommand per job.

Each subcommand lives in its own module and exposes `add_arguments(parser)` and `run(args) -> int`.
Only the chosen subcommand's module is imported, so `natsedge hub` does not load the firmware
tooling (and a problem in one tool cannot break the others). A subcommand that needs a package of an extra says
so in one line (host/tools/needs.py) instead of a traceback.
"""

import argparse
import importlib
import sys

from host.tools import needs

# subcommand -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "hub": ("host.tools.hub_cmd", "run the hub server (nats-server compatible)"),
    "edge": ("host.tools.edge_cmd", "run an edge leaf broker from a JSON config (CPython)"),
    "bench": ("host.tools.bench", "benchmark a NATS server, or the hub side by side with nats-server"),
    "firmware": ("host.tools.firmware_cmd", "build the edge as .mpy bytecode (natsedge firmware bundle)"),
    "flash": ("host.tools.firmware_cmd", "erase a board and write a MicroPython image with esptool"),
    "deploy": ("host.tools.deploy_cmd", "copy the edge bundle, config and boot/main to a board over mpremote"),
    "console": ("host.tools.deploy_cmd", "a board's REPL, or its log with --log"),
    "sim": ("sim.cli", "run a fleet of MicroPython edges against a hub with partitions and crashes, then report"),
    "dashboard": ("sim.dashboard", "serve a fleet dashboard for a hub (its monitoring port, $EDGE.*.status)"),
    "trace": ("host.tools.trace_cmd", "send a traced message and print the path it took (servers, hops, subscribers)"),
    "workload": ("host.tools.workload_cmd", "deploy code to edges over NATS; ls, status, rollback, remove, host"),
    "vboard": ("host.tools.vboard", "a virtual board: the MicroPython unix port behind a PTY, for mpremote and deploy"),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    top = argparse.ArgumentParser(prog="natsedge", description="NATS at the edge: hub, edge, fleet tools")
    sub = top.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_mod, helptext) in SUBCOMMANDS.items():
        sub.add_parser(name, help=helptext, add_help=False)
    if not argv or argv[0] not in SUBCOMMANDS:
        top.parse_args(argv)  # prints help or the "invalid choice" error
        top.print_help()
        return 2
    name, rest = argv[0], argv[1:]
    modname, helptext = SUBCOMMANDS[name]
    try:
        mod = importlib.import_module(modname)
        parser = argparse.ArgumentParser(prog=f"natsedge {name}", description=helptext)
        mod.add_arguments(parser)
        return int(mod.run(parser.parse_args(rest)) or 0)
    except (needs.MissingExtra, needs.ToolNotFound) as e:
        print(e, file=sys.stderr)
        return 1
    except ModuleNotFoundError as e:
        missing = needs.for_missing_module(e, f"natsedge {name}")
        if missing is None:
            raise
        print(missing, file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

"""The `natsedge` console command: one entry point, one subcommand per job.

Each subcommand lives in its own module and exposes `add_arguments(parser)` and `run(args) -> int`;
this file only wires them together so `natsedge --help` lists everything users were promised.
"""

import argparse
import importlib
import sys

# subcommand -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "hub": ("host.main", "run the hub server (nats-server compatible)"),
    "bench": ("host.bench", "benchmark a NATS server, or the hub side by side with nats-server"),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="natsedge", description="NATS at the edge: hub, edge, fleet tools")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    modules = {}
    for name, (modname, helptext) in SUBCOMMANDS.items():
        mod = importlib.import_module(modname)
        modules[name] = mod
        p = sub.add_parser(name, help=helptext, description=helptext)
        mod.add_arguments(p)
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    return int(modules[args.command].run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())

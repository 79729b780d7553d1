"""`natsedge sim`: run a fleet of MicroPython edges against a hub with faults, then print (and save) a report.

Exit codes: 0 the run completed (losses are in the report, not a failure), 1 the run could not be done (the hub or
an edge would not start), 2 bad flags or scenario (one line on stderr, no traceback).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from host.tools import needs
from sim import report as report_mod
from sim import scenario as scenario_mod
from sim.client import parse_url
from sim.dashboard import listen_address
from sim.runner import Options, SimError, Simulation


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if not 1 <= v <= scenario_mod.MAX_EDGES:
        raise argparse.ArgumentTypeError(f"expected 1..{scenario_mod.MAX_EDGES}, got {v}")
    return v


def _seconds(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not v >= 0 or v == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number of seconds >= 0, got {text!r}")
    return v


def _hubs(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if not 1 <= v <= scenario_mod.MAX_HUBS:
        raise argparse.ArgumentTypeError(f"expected 1..{scenario_mod.MAX_HUBS}, got {v}")
    return v


def _port(text: str) -> int:
    if not text.isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"expected a port number 0..65535, got {text!r}")
    return int(text)


def _seed(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return int(text)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--scenario", metavar="FILE", help="scenario JSON (docs/sim.md); default: 3 edges, 30 s, no faults")
    p.add_argument("--edges", type=_positive_int, metavar="N", help="number of edges (overrides the scenario)")
    p.add_argument("--duration", type=_seconds, metavar="S", help="run time in seconds, 0 = until Ctrl-C")
    p.add_argument("--seed", type=_seed, metavar="N", help="seed for random fault targets")
    p.add_argument("--hub", metavar="HUB",
                   help='"hub" (start natsedge hub, default; also "natsedge"), "nats-server" (start nats-server), '
                        'one kind per node of a cluster ("hub,nats-server,hub"), '
                        "or the client URL of a running server (nats://host:4222)")
    p.add_argument("--hubs", type=_hubs, metavar="N",
                   help="start a cluster of N hub nodes (overrides the scenario's hubs; default 1)")
    p.add_argument("--leaf-url", metavar="URL", help="external hub: its leafnode port (default: its host, port 7422)")
    p.add_argument("--monitor-url", metavar="URL", help="external hub: its monitoring URL (for the dashboard)")
    p.add_argument("--js", choices=("auto", "on", "off"), default="auto",
                   help="JetStream on the started hub: auto = on if the hub starts with it (default)")
    p.add_argument("--hub-port", type=_port, default=0, metavar="PORT",
                   help="started hub (a cluster: node 1): client port (0 = free)")
    p.add_argument("--hub-http-port", type=_port, default=0, metavar="PORT",
                   help="started hub (a cluster: node 1): monitoring port (0 = free)")
    p.add_argument("--leaf-port", type=_port, default=0, metavar="PORT",
                   help="started hub (a cluster: node 1): leafnode port (0 = free)")
    p.add_argument("--dashboard", type=listen_address, metavar="HOST:PORT",
                   help="serve the dashboard here (PORT alone: on 127.0.0.1; 0 = a free port)")
    p.add_argument("--report", metavar="FILE", help="write the JSON report to FILE")
    p.add_argument("--workdir", metavar="DIR", help="edge state folders and hub files (default: a temporary folder, "
                                                   "removed at the end)")
    p.add_argument("--keep", action="store_true", help="keep the temporary work folder")
    p.add_argument("--micropython", metavar="PATH", help="the MicroPython unix binary (default: next to Python)")
    p.add_argument("--quiet", action="store_true", help="print the report only, no progress lines")


EDGE_MEMORY = 16 << 20  # RSS of one unix-port edge process, with room (shared/micropython/FACTS.md 2.4: ~12 MB)


def available_memory() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _fail(msg: str, code: int = 2) -> int:
    print(f"natsedge sim: {msg}", file=sys.stderr)
    return code


def _hub_kinds(value: str | None) -> list[str] | None:
    """--hub: None (not given), a kind or a comma-separated list of kinds (normalized), or ValueError for a kind
    list with a bad entry. A URL (or anything else with "://" or ":") is left to the external-hub checks."""
    if value is None or "://" in value or (":" in value and "," not in value):
        return None
    words = value.split(",")
    kinds = [scenario_mod.hub_kind(w.strip()) for w in words]
    if len(words) == 1 and kinds[0] is None:
        return None  # not a kind: checked as an external hub's URL
    bad = [w for w, k in zip(words, kinds, strict=True) if k is None]
    if bad:
        raise ValueError(f"unknown hub kind {bad[0].strip()!r} in {value!r} "
                         f"(expected {scenario_mod.KINDS_EXPECTED}, one per node)")
    return [k for k in kinds if k is not None]


def run(args: argparse.Namespace) -> int:
    try:
        kinds_flag = _hub_kinds(args.hub)
    except ValueError as e:
        return _fail(f"--hub: {e}")
    external = args.hub is not None and kinds_flag is None
    try:
        sc = scenario_mod.load(args.scenario)
        if args.edges is not None:
            sc.edges = args.edges
        if args.duration is not None:
            sc.duration = args.duration
        if args.seed is not None:
            sc.seed = args.seed
        if not external:
            scenario_mod.resolve_hubs(sc, args.hubs, kinds_flag)
        elif (args.hubs or sc.hubs) > 1:
            raise scenario_mod.ScenarioError(f"--hub {args.hub}: an external hub is one server; a cluster "
                                             f"({args.hubs or sc.hubs} hubs) is started by the simulator "
                                             "(--hub KIND or KIND,KIND,...)")
        else:
            sc.hub_kinds = None  # the scenario's kinds are for hubs the simulator starts
        scenario_mod.validate(sc)
    except scenario_mod.ScenarioError as e:
        where = f"scenario {args.scenario}: " if args.scenario and not str(e).startswith(
            ("cannot", "scenario", "--")) else ""
        return _fail(f"{where}{e}")
    avail = available_memory()
    if avail is not None and sc.edges * EDGE_MEMORY > avail * 0.8:
        return _fail(f"{sc.edges} edges need about {sc.edges * EDGE_MEMORY >> 20} MB, this machine has "
                     f"{avail >> 20} MB available: use fewer edges")
    if args.micropython and not needs.is_executable(args.micropython):
        return _fail(f"MicroPython unix binary not found ({args.micropython}): pass the path of one, or leave "
                     "--micropython out to use the one natsedge[sim] installs")
    mp = needs.micropython("natsedge sim", "sim", args.micropython)  # else MissingExtra: one line, exit 1
    if sc.workloads:  # the steps run `natsedge workload` (nats-py) against the hub
        needs.module("nats", "natsedge sim (a scenario with workload steps)")
    if external:
        assert args.hub is not None
        try:
            parse_url(args.hub)
            if args.leaf_url:
                parse_url(args.leaf_url, 7422)
        except ValueError as e:
            return _fail(f"--hub: {e}")
        if not args.hub.startswith("nats://") and "://" in args.hub:
            return _fail(f'--hub: expected "hub", "nats-server" or a nats:// URL, got {args.hub!r}')
        hub_faults = sorted({f.type for f in sc.faults if f.type in scenario_mod.HUB_FAULTS})
        if hub_faults:
            what = "restarts the hub" if hub_faults == ["hub_restart"] else f"has hub faults ({', '.join(hub_faults)})"
            return _fail(f"the scenario {what}, which needs a hub started by the simulator "
                         '(--hub hub or --hub nats-server), not an external one')
    elif "nats-server" in (sc.hub_kinds or []):
        needs.nats_server("natsedge sim --hub nats-server", "sim")
    if args.report:
        parent = Path(args.report).resolve().parent
        if not parent.is_dir():
            return _fail(f"--report: folder {parent} does not exist")
    hub = args.hub if external and args.hub is not None else (sc.hub_kinds or ["hub"])[0]
    opts = Options(hub=hub, leaf_url=args.leaf_url, monitor_url=args.monitor_url, jetstream=args.js,
                   hub_port=args.hub_port, hub_http_port=args.hub_http_port, leaf_port=args.leaf_port,
                   dashboard=args.dashboard, workdir=Path(args.workdir) if args.workdir else None, keep=args.keep,
                   micropython=mp, quiet=args.quiet)
    try:
        report = asyncio.run(Simulation(sc, opts).run())
    except SimError as e:
        return _fail(str(e), e.code)
    if args.report:
        Path(args.report).write_text(json.dumps(report, indent=2) + "\n")
    print(report_mod.text(report), flush=True)
    if args.report:
        print(f"report: {args.report}", flush=True)
    return 0

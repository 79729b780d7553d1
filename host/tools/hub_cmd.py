"""`natsedge hub`: start the hub. Flags mirror nats-server's common ones and override the config file."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from host.opts import Options, OptionsError, load_config, validate
from host.server import run_server


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", "--config", help="configuration file (nats-server syntax)")
    p.add_argument("-t", dest="test_config", action="store_true", help="test the configuration and exit")
    p.add_argument("-a", "--addr", "--net", dest="host", help="bind to host address (default 0.0.0.0)")
    p.add_argument("-p", "--port", type=int, help="client port (default 4222; 0 picks a free port)")
    p.add_argument("-n", "--name", "--server_name", dest="server_name", help="server name")
    p.add_argument("-m", "--http_port", type=int, help="HTTP monitoring port")
    p.add_argument("--user", help="user required for connections")
    p.add_argument("--pass", dest="password", help="password required for connections")
    p.add_argument("--auth", help="authorization token required for connections")
    p.add_argument("-js", "--jetstream", action="store_true", help="enable JetStream")
    p.add_argument("-sd", "--store_dir", help="JetStream storage directory")
    p.add_argument("-l", "--log", dest="log_file", help="file to redirect log output")
    p.add_argument("-D", "--debug", action="store_true", help="enable debug logging")
    p.add_argument("-V", "--trace", action="store_true", help="accepted for nats-server compatibility")
    p.add_argument("--no-uvloop", action="store_true", help="use the default asyncio loop even if uvloop is installed")


def options_from_args(args: argparse.Namespace) -> Options:
    opts = load_config(args.config) if args.config else Options()
    if args.host is not None:
        opts.host = args.host
    if args.port is not None:
        opts.port = args.port
    if args.server_name:
        opts.server_name = args.server_name
    if args.http_port is not None:
        opts.http_port = args.http_port
    if args.user:
        opts.username = args.user
    if args.password:
        opts.password = args.password
    if args.auth:
        opts.token = args.auth
    if args.jetstream:
        opts.jetstream = True
    if args.store_dir:
        opts.store_dir = args.store_dir
    validate(opts)
    return opts


def run(args: argparse.Namespace) -> int:
    handler: logging.Handler = (
        logging.FileHandler(args.log_file) if args.log_file else logging.StreamHandler(sys.stderr)
    )
    handler.setFormatter(logging.Formatter(f"[{os.getpid()}] %(asctime)s.%(msecs)03d [%(levelname).3s] %(message)s",
                                           "%Y/%m/%d %H:%M:%S"))
    root = logging.getLogger("natsedge")
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if args.debug else logging.INFO)
    try:
        opts = options_from_args(args)
    except OptionsError as e:
        print(f"natsedge hub: {e}", file=sys.stderr)
        return 1
    if args.test_config:
        for w in opts.warnings:
            print(f"natsedge hub: warning: {w}", file=sys.stderr)
        print(f"natsedge hub: configuration file {args.config} is valid", file=sys.stderr)
        return 0
    log = logging.getLogger("natsedge.hub")
    if opts.cluster is not None:
        log.warning("cluster block read, but routes (clustering) are not available in this version of the hub yet")
    return run_server(opts, use_uvloop=not args.no_uvloop)

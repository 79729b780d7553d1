"""`natsedge hub`: start the hub. Flags mirror nats-server's common ones and override the config file."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from host.jwt import check_options
from host.opts import Options, OptionsError, load_config, split_url, validate
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
    p.add_argument("--tls", action="store_true", help="enable TLS on the client port (needs --tlscert, --tlskey)")
    p.add_argument("--tlscert", help="server certificate file")
    p.add_argument("--tlskey", help="server private key file")
    p.add_argument("--tlscacert", help="client certificate CA for verification")
    p.add_argument("--tlsverify", action="store_true", help="enable TLS with client verification")
    p.add_argument("-js", "--jetstream", action="store_true", help="enable JetStream")
    p.add_argument("-sd", "--store_dir", help="JetStream storage directory")
    p.add_argument("--cluster", "--cluster_listen", dest="cluster",
                   help="cluster (route) URL to listen on, e.g. nats://127.0.0.1:6222")
    p.add_argument("--cluster_name", help="cluster name")
    p.add_argument("--routes", help="routes to dial, comma separated, e.g. nats-route://127.0.0.1:6223")
    p.add_argument("--cluster_advertise", help="cluster URL to advertise to other servers")
    p.add_argument("--no_advertise", action="store_true", help="do not advertise known cluster URLs to clients")
    p.add_argument("--connect_retries", type=int, help="retries for an implicit route (explicit ones retry forever)")
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
    cluster_flags(opts, args)
    tls_flags(opts, args)
    validate(opts)
    check_options(opts)  # nkeys, credentials and operator JWTs (host/jwt.py; needs the `hub` extra's nkeys)
    return opts


def tls_flags(opts: Options, args: argparse.Namespace) -> None:
    """nats-server's TLS flags (overrideTLS): any of them replaces the config file's `tls {}` block, and then a
    certificate and key are required."""
    if not (args.tls or args.tlsverify or args.tlscert or args.tlskey or args.tlscacert):
        return
    if not args.tlscert:
        raise OptionsError("TLS Server certificate must be present and valid")
    if not args.tlskey:
        raise OptionsError("TLS Server private key must be present and valid")
    opts.tls_cert, opts.tls_key, opts.tls_ca = args.tlscert, args.tlskey, args.tlscacert
    opts.tls_verify = bool(args.tlsverify)
    opts.tls_map = False


def cluster_flags(opts: Options, args: argparse.Namespace) -> None:
    """nats-server's cluster flags; they override the config file's `cluster {}` block."""
    co = opts.cluster
    if args.cluster:
        parts = split_url(args.cluster)
        if parts is None:
            raise OptionsError(f"--cluster: expected a URL like nats://127.0.0.1:6222, got {args.cluster!r}")
        co.enabled = True
        co.host, co.port = parts[0], parts[1]
        if parts[2] is not None:
            co.username, co.password = parts[2], parts[3]
    if args.cluster_name:
        if " " in args.cluster_name:
            raise OptionsError(f"--cluster_name: a cluster name cannot contain spaces, got {args.cluster_name!r}")
        co.name = args.cluster_name
    if args.routes:
        co.routes = []
        for url in args.routes.split(","):
            url = url.strip()
            if split_url(url) is None:
                raise OptionsError(f"--routes: expected URLs like nats-route://127.0.0.1:6222, got {url!r}")
            co.routes.append(url)
    if args.cluster_advertise:
        co.advertise = args.cluster_advertise
    if args.no_advertise:
        co.no_advertise = True
    if args.connect_retries is not None:
        co.connect_retries = args.connect_retries


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
    return run_server(opts, use_uvloop=not args.no_uvloop)

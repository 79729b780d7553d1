"""The JetStream sourcing scenarios across a leafnode, for `natsedge bench --compare` (docs/benchmarks.md,
"JetStream sourcing").

``js_leaf_source_lag`` / ``js_leaf_source_catchup`` are ``js_source_lag`` / ``js_source_catchup`` of
host/tools/bench_js.py with the origin stream on one server and the sourcing stream on another, as in the
hybrid-cloud chain of docs/jetstream.md: a "site" server in JetStream domain ``site`` is a leaf of a "cloud" server
in domain ``cloud``, and the cloud's ``BENCH_SRC`` sources the site's ``BENCH`` through ``external.api``
``$JS.site.API``. Both servers of a pair are of one kind (two nats-servers, or two hubs). The publisher talks to
the site, the republish of the sourcing stream is read at the cloud.

Each server gets an extra config file (nats-server syntax, which the hub reads too; the command-line flags still
set the client port and the store): ``jetstream { domain: ... }`` and the leafnode ``listen`` (cloud) or
``remotes`` (site). A pair counts as started once the cloud's client reaches the site's JetStream API through
the leafnode.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

from host.tools.bench_js import SOURCE, Conn, js_frames, run_source_catchup, run_source_lag, setup
from host.tools.benchlib import (
    LEAF_JS_SCENARIOS,
    LOCALHOST,
    BenchConfig,
    BenchError,
    ServerProcess,
    compare_abba,
    free_port,
    parse_url,
)

SITE_DOMAIN = "site"
CLOUD_DOMAIN = "cloud"
SITE_API = f"$JS.{SITE_DOMAIN}.API"
LINK_TIMEOUT = 20.0  # s for the leafnode to carry the site's JetStream API to the cloud


class ConfServer(ServerProcess):
    """A ServerProcess with ``-c FILE`` appended; `conf` (a function of nothing, called on every start, so free
    ports are fresh) gives the file's text."""

    def __init__(self, label: str, cmd: Sequence[str], conf_path: str, conf: Callable[[], str]) -> None:
        super().__init__(label, cmd)
        self.conf_path = conf_path
        self.conf = conf

    def argv(self) -> list[str]:
        return super().argv() + ["-c", self.conf_path]

    def start(self, timeout: float = 20.0) -> ConfServer:
        with open(self.conf_path, "w") as f:
            f.write(self.conf())
        super().start(timeout)
        return self


class DomainPair:
    """A site server (domain ``site``) that is a leaf of a cloud server (domain ``cloud``), one server command."""

    def __init__(self, label: str, cmd: Sequence[str]) -> None:
        self.label = label
        self._conf_dir = tempfile.mkdtemp(prefix="natsedge-bench-jsleaf-")
        self.leaf_port = 0
        self.cloud = ConfServer(f"{label}-cloud", cmd, os.path.join(self._conf_dir, "cloud.conf"),
                                lambda: f"jetstream {{ domain: {CLOUD_DOMAIN} }}\n"
                                        f"leafnodes {{ listen: {LOCALHOST}:{self.leaf_port} }}\n")
        self.site = ConfServer(f"{label}-site", cmd, os.path.join(self._conf_dir, "site.conf"),
                               lambda: f"jetstream {{ domain: {SITE_DOMAIN} }}\nleafnodes {{ remotes: "
                                       f'[{{ url: "nats-leaf://{LOCALHOST}:{self.leaf_port}" }}] }}\n')
        self.servers = [self.cloud, self.site]

    def start(self, timeout: float = LINK_TIMEOUT) -> DomainPair:
        self.leaf_port = free_port()
        try:
            self.cloud.start(timeout)
            self.site.start(timeout)
            wait_for_site_api(self.cloud, timeout)
        except BenchError as exc:
            tails = self.log_tail()
            self.stop()
            raise BenchError(f"{self.label} site/cloud pair did not start: {exc}\n{tails}") from exc
        except BaseException:
            self.stop()
            raise
        return self

    def alive(self) -> bool:
        return all(s.alive() for s in self.servers)

    def log_tail(self) -> str:
        return "\n".join(f"--- {s.label}:\n{s.log_tail()}" for s in self.servers)

    def stop(self) -> None:
        """Stop both servers (each by its PID's process group; `start` may follow)."""
        for srv in self.servers:
            srv.stop()

    def close(self) -> None:
        """Stop both servers and remove the config directory."""
        self.stop()
        shutil.rmtree(self._conf_dir, ignore_errors=True)


def wait_for_site_api(cloud: ServerProcess, timeout: float) -> None:
    """Poll `$JS.site.API.INFO` from a client of the cloud until the site's JetStream answers over the leafnode."""
    conn = Conn(parse_url(cloud.url))
    try:
        deadline = time.monotonic() + timeout
        last = b""
        while time.monotonic() < deadline:
            conn.sock.sendall(b"PUB %s.INFO %s 0\r\n\r\n" % (SITE_API.encode(), conn.reply()))
            try:
                _subject, _hdr, last = conn.read_msg(timeout=1.0)
            except BenchError:  # no answer yet: the leafnode or its interest is not up
                continue
            if last.startswith(b"{") and b'"error"' not in last:
                return
            time.sleep(0.1)
        raise BenchError(f"{SITE_API}.INFO never answered through the leafnode (last: {last[:200]!r})")
    finally:
        conn.close()


def run_js_leaf(pair: DomainPair, scenario: str, size: int, cfg: BenchConfig) -> dict[str, Any]:
    """One run: a fresh origin on the site, the sourcing stream created on the cloud."""
    origin = Conn(parse_url(pair.site.url))
    try:
        sourcing = Conn(parse_url(pair.cloud.url), inbox=b"_INBOX.bjscloud.")
        try:
            sourcing.api(f"$JS.API.STREAM.DELETE.{SOURCE}")  # an earlier run's; the cloud has no origin
            setup(origin, "js_source")
            frames = js_frames("js_source", size, cfg)
            if scenario == "js_leaf_source_lag":
                return run_source_lag(origin, sourcing, SITE_API, frames, cfg)
            return run_source_catchup(origin, sourcing, SITE_API, frames)
        finally:
            sourcing.close()
    except (OSError, ValueError) as exc:
        raise BenchError(f"{scenario}: {exc}") from exc
    finally:
        origin.close()


def run_compare_js_leaf(
    cfg: BenchConfig, cmds: dict[str, list[str]], log: Callable[[str], None] = lambda s: None
) -> list[dict[str, Any]]:
    """The leafnode sourcing scenarios of `run_compare`: a site/cloud pair of each server kind started once, runs
    alternating ABBA between them. Returns result entries in `run_compare`'s shape."""

    def describe(pair: DomainPair) -> str:
        return (f"site pid {pair.site.pid} on {pair.site.url} (domain {SITE_DOMAIN}), leaf of cloud pid "
                f"{pair.cloud.pid} on {pair.cloud.url} (domain {CLOUD_DOMAIN}, leafnodes on {pair.leaf_port})")

    return compare_abba(cfg, list(cmds), LEAF_JS_SCENARIOS, lambda label: DomainPair(label, cmds[label]),
                        describe, lambda pair, scen, size: run_js_leaf(pair, scen, size, cfg), log)

"""The scenario file (JSON): fleet size, run length, what each edge publishes, requests, faults, workload deploys.

Every key is checked and every error names the key (`fault 2: "for": expected ...`); unknown keys are errors, so a
typo never silently falls back to a default. docs/sim.md documents the format.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MAX_EDGES = 500  # each unix-port edge is a ~12 MB process (shared/micropython/FACTS.md 2.4)
MAX_RATE = 1000.0  # messages per second per publisher; every publish is also one stdout line
# Edge config keys the simulator owns; `edge.config` may add any other top-level section (forward, kv, ...).
SIM_OWNED_KEYS = ("name", "hub", "listen", "data", "app", "stats", "limits")
# Quick failure detection and reconnects, so that faults show within seconds; `edge.limits` overrides.
DEFAULT_LIMITS: dict[str, Any] = {"ping_interval": 1, "ping_max": 2, "reconnect_min": 0.1, "reconnect_max": 2}
FAULT_TYPES = ("partition", "crash", "hub_restart", "hub_kill", "hub_start", "workers_kill", "workers_start")
HUB_FAULTS = ("hub_restart", "hub_kill", "hub_start")  # need hubs the simulator started
WORKER_FAULTS = ("workers_kill", "workers_start")  # a region's queue workers (scenarios with "regions")
PARTITION_MODES = ("blackhole", "reset")
MAX_REGIONS = 4  # clusters joined by gateways into a super-cluster
MAX_WORKERS = 20  # queue workers per region (each is a connection of the simulator)
MAX_HUBS = 7  # hub nodes in a cluster (each is a server process on this machine)
HUB_KINDS = ("hub", "nats-server")  # "hub" = ours (`natsedge hub`)
KIND_ALIASES = {"natsedge": "hub"}  # accepted in scenario files and --hub, reported as "hub"
KINDS_EXPECTED = '"natsedge" (or "hub") or "nats-server"'


class ScenarioError(Exception):
    """A bad scenario file or flag: printed as one line, exit code 2."""


@dataclass
class Publisher:
    subject: str  # may hold "{edge}", replaced by the edge's name
    rate: float
    size: int
    edges: Any = "all"


@dataclass
class Fault:
    index: int  # position in the file, for messages
    type: str
    at: float
    every: float | None = None
    edges: Any = None
    duration: float = 0.0  # partition: how long ("for")
    mode: str = "blackhole"
    down: float | None = 0.0  # crash / hub_restart / hub_kill: time before the restart (hub_kill: None = stays down)
    node: int | None = None  # hub faults: the hub node (1-based); None = every node (hub_restart only)
    region: str | None = None  # workers_kill / workers_start: the region whose workers go or come back

    def describe(self) -> str:
        if self.type == "partition":
            return f"partition ({self.mode}, {self.duration:g} s)"
        if self.type == "crash":
            return f"crash (SIGKILL, restart after {self.down:g} s)"
        if self.type in WORKER_FAULTS:
            return f"{self.region}'s workers " + ("killed" if self.type == "workers_kill" else "started")
        where = "hub" if self.node is None else f"hub node {self.node}"
        if self.type == "hub_kill":
            return f"{where} kill (SIGKILL" + ("" if self.down is None else f", restart after {self.down:g} s") + ")"
        if self.type == "hub_start":
            return f"{where} start"
        return f"{where} restart (down {self.down:g} s)"


@dataclass
class Region:
    """A cluster of `hubs` nodes with a gateway to every other region's (docs/sim.md, "Regions")."""
    name: str
    hubs: int = 1


@dataclass
class Service:
    """The regions' queue-group service: `workers` queue subscribers per region (the simulator's connections to
    that region's hubs), and per region a requester on that region's hubs sending `rate` requests/s."""
    subject: str = "sim.work"
    queue: str = "workers"
    workers: int = 2
    rate: float = 5.0
    timeout: float = 1.0


@dataclass
class WorkloadStep:
    """`natsedge workload deploy` or `rollback` at a time of the run (docs/workloads.md)."""
    index: int  # position in the file, for messages
    at: float
    name: str  # the workload
    module: str | None = None  # deploy: the module's file (relative paths: from the scenario file's folder)
    target: str = "*"
    version: str | None = None  # deploy: None = the state's next number; None for a rollback

    def describe(self) -> str:
        if self.module is None:
            return f"rollback of {self.name}"
        return f"deploy of {Path(self.module).name} as {self.name} to {self.target}"


@dataclass
class Scenario:
    name: str = "default"
    edges: int = 3
    duration: float = 30.0  # 0: until Ctrl-C
    seed: int = 1
    settle: float = 5.0
    publish: list[Publisher] = field(default_factory=lambda: [Publisher("sim.{edge}.tele", 2.0, 32)])
    request_subject: str = "sim.{edge}.svc"
    request_rate: float = 1.0
    request_timeout: float = 1.0
    stats: float = 1.0
    heapsize: str | None = None
    lan: bool = False
    limits: dict[str, Any] = field(default_factory=dict)
    extra_config: dict[str, Any] = field(default_factory=dict)
    faults: list[Fault] = field(default_factory=list)
    stream: dict[str, Any] | None = None
    hubs: int = 1  # hub nodes; more than 1: a cluster the simulator starts
    hub_kinds: list[str] | None = None  # one per node ("hub" or "nats-server"); None: --hub decides
    workloads: list[WorkloadStep] = field(default_factory=list)
    regions: list[Region] = field(default_factory=list)  # none: one cluster (or one hub)
    service: Service = field(default_factory=Service)  # used with regions only

    def edge_names(self) -> list[str]:
        return [f"edge-{i}" for i in range(self.edges)]

    def select(self, selector: Any, rng: random.Random) -> list[str]:
        """Edge names a selector stands for (checked by validate(); {"random": k} draws from rng)."""
        names = self.edge_names()
        if selector == "all":
            return names
        if isinstance(selector, dict):
            return sorted(rng.sample(names, min(selector["random"], len(names))))
        return [names[s] if isinstance(s, int) else s for s in selector]

    def publishers_for(self, name: str) -> list[Publisher]:
        rng = random.Random(0)  # only list selectors are allowed for publishers; rng is never drawn from
        return [p for p in self.publish if name in self.select(p.edges, rng)]

    def to_json(self) -> dict[str, Any]:
        regions: dict[str, Any] = {} if not self.regions else {
            "regions": [{"name": r.name, "hubs": r.hubs} for r in self.regions],
            "service": {"subject": self.service.subject, "queue": self.service.queue, "workers": self.service.workers,
                        "rate": self.service.rate, "timeout": self.service.timeout}}
        return {
            "name": self.name, "edges": self.edges, "duration": self.duration, "seed": self.seed,
            "settle": self.settle,
            "publish": [{"subject": p.subject, "rate": p.rate, "size": p.size, "edges": p.edges} for p in self.publish],
            "requests": {"subject": self.request_subject, "rate": self.request_rate, "timeout": self.request_timeout},
            "edge": {"stats": self.stats, "heapsize": self.heapsize, "lan": self.lan, "limits": self.limits,
                     "config": self.extra_config},
            "faults": [_fault_json(f) for f in self.faults],
            "stream": self.stream,
            "hubs": self.hubs,
            "hub_kinds": self.hub_kinds,
            "workloads": [_step_json(w) for w in self.workloads],
            **regions,
        }

    def region_of_edge(self, index: int) -> str:
        """Regions: edge i is in region i % (number of regions)."""
        return self.regions[index % len(self.regions)].name


def _step_json(w: WorkloadStep) -> dict[str, Any]:
    if w.module is None:
        return {"at": w.at, "rollback": w.name}
    return {"at": w.at, "deploy": w.module, "name": w.name, "target": w.target, "version": w.version}


def _fault_json(f: Fault) -> dict[str, Any]:
    d: dict[str, Any] = {"type": f.type, "at": f.at}
    if f.every is not None:
        d["every"] = f.every
    if f.type in HUB_FAULTS:
        if f.node is not None:
            d["node"] = f.node
    elif f.type in WORKER_FAULTS:
        d["region"] = f.region
    else:
        d["edges"] = f.edges
    if f.type == "partition":
        d.update({"for": f.duration, "mode": f.mode})
    elif f.type not in ("hub_start", *WORKER_FAULTS) and f.down is not None:
        d["down"] = f.down
    return d


def _got(v: Any) -> str:
    return json.dumps(v)


class _Checker:
    def __init__(self, where: str) -> None:
        self.where = where

    def fail(self, key: str, expected: str, value: Any) -> ScenarioError:
        return ScenarioError(f'{self.where}"{key}": expected {expected}, got {_got(value)}')

    def keys(self, d: dict[str, Any], allowed: tuple[str, ...]) -> None:
        for k in d:
            if k not in allowed:
                raise ScenarioError(f'{self.where}unknown key "{k}" (known: {", ".join(allowed)})')

    def obj(self, d: dict[str, Any], key: str) -> dict[str, Any]:
        v = d.get(key, {})
        if v is None:
            return {}
        if not isinstance(v, dict):
            raise self.fail(key, "an object", v)
        return v

    def number(self, d: dict[str, Any], key: str, default: float | None, low: float, high: float | None = None,
               strict: bool = False) -> float:
        v = d.get(key, default)
        bad = isinstance(v, bool) or not isinstance(v, (int, float)) or v < low or (strict and v == low)
        if not bad and high is not None and v > high:
            bad = True
        if bad:
            rel = ">" if strict else ">="
            rng = f"a number {rel} {low:g}" + (f" and <= {high:g}" if high is not None else "")
            raise self.fail(key, rng, v)
        return float(v)

    def integer(self, d: dict[str, Any], key: str, default: int, low: int, high: int | None = None) -> int:
        v = d.get(key, default)
        if isinstance(v, bool) or not isinstance(v, int) or v < low or (high is not None and v > high):
            raise self.fail(key, f"an integer >= {low}" + (f" and <= {high}" if high is not None else ""), v)
        return v

    def string(self, d: dict[str, Any], key: str, default: str) -> str:
        v = d.get(key, default)
        if not isinstance(v, str) or not v:
            raise self.fail(key, "a non-empty string", v)
        return v


def _subject(c: _Checker, key: str, s: str, wildcards: bool = False) -> None:
    probe = s.replace("{edge}", "edge-0")
    tokens = probe.split(".")
    if any(not t or any(ch in t for ch in " \t\r\n") for t in tokens) or (
            not wildcards and any(t in ("*", ">") for t in tokens)):
        raise c.fail(key, "a literal NATS subject (tokens separated by dots, no spaces or wildcards; "
                          '"{edge}" stands for the edge name)', s)


def _selector(c: _Checker, v: Any, random_ok: bool) -> Any:
    if v == "all":
        return v
    if isinstance(v, dict) and random_ok:
        c.keys(v, ("random",))
        c.integer(v, "random", 0, 1)
        return v
    if isinstance(v, list) and v and all((isinstance(x, int) and not isinstance(x, bool) and x >= 0)
                                         or (isinstance(x, str) and x) for x in v):
        return v
    expected = '"all", a list of edge indexes or names' + (', or {"random": k}' if random_ok else "")
    raise c.fail("edges", expected, v)


def _publisher(i: int, d: Any) -> Publisher:
    c = _Checker(f"publish {i}: ")
    if not isinstance(d, dict):
        raise ScenarioError(f"publish {i}: expected an object, got {_got(d)}")
    c.keys(d, ("subject", "rate", "size", "edges"))
    subject = c.string(d, "subject", "sim.{edge}.tele")
    _subject(c, "subject", subject)
    rate = c.number(d, "rate", 2.0, 0.0, MAX_RATE, strict=True)
    size = c.integer(d, "size", 32, 0, 1 << 20)
    return Publisher(subject, rate, size, _selector(c, d.get("edges", "all"), random_ok=False))


def _fault(i: int, d: Any) -> Fault:
    c = _Checker(f"fault {i}: ")
    if not isinstance(d, dict):
        raise ScenarioError(f"fault {i}: expected an object, got {_got(d)}")
    kind = d.get("type")
    if kind not in FAULT_TYPES:
        raise c.fail("type", " or ".join(f'"{t}"' for t in FAULT_TYPES), kind)
    common = ("type", "at", "every")
    f = Fault(i, kind, c.number(d, "at", None, 0.0))
    if "every" in d:
        f.every = c.number(d, "every", None, 0.0, strict=True)
    if kind == "partition":
        c.keys(d, (*common, "edges", "for", "mode"))
        if "edges" not in d:
            raise ScenarioError(f'fault {i}: "edges" is required for a partition')
        f.edges = _selector(c, d["edges"], random_ok=True)
        f.duration = c.number(d, "for", None, 0.0, strict=True)
        f.mode = d.get("mode", "blackhole")
        if f.mode not in PARTITION_MODES:
            raise c.fail("mode", " or ".join(f'"{m}"' for m in PARTITION_MODES), f.mode)
    elif kind == "crash":
        c.keys(d, (*common, "edges", "down"))
        if "edges" not in d:
            raise ScenarioError(f'fault {i}: "edges" is required for a crash')
        f.edges = _selector(c, d["edges"], random_ok=True)
        f.down = c.number(d, "down", 0.5, 0.0)
    elif kind in WORKER_FAULTS:
        c.keys(d, (*common, "region"))
        if "region" not in d:
            raise ScenarioError(f'fault {i}: "region" is required for a {kind} (a region\'s name)')
        f.region = c.string(d, "region", "")
    elif kind == "hub_restart":
        c.keys(d, (*common, "down", "node"))
        f.down = c.number(d, "down", 1.0, 0.0)
        if "node" in d:
            f.node = c.integer(d, "node", 1, 1, MAX_HUBS)
    else:  # hub_kill, hub_start: one node
        c.keys(d, (*common, "node", "down") if kind == "hub_kill" else (*common, "node"))
        if "node" not in d:
            raise ScenarioError(f'fault {i}: "node" is required for a {kind} (the hub node, 1..{MAX_HUBS})')
        f.node = c.integer(d, "node", 1, 1, MAX_HUBS)
        f.down = c.number(d, "down", None, 0.0) if d.get("down") is not None else None
    return f


def _workload_step(i: int, d: Any) -> WorkloadStep:
    c = _Checker(f"workload step {i}: ")
    if not isinstance(d, dict):
        raise ScenarioError(f"workload step {i}: expected an object, got {_got(d)}")
    at = c.number(d, "at", None, 0.0)
    if "rollback" in d:
        c.keys(d, ("at", "rollback"))
        return WorkloadStep(i, at, c.string(d, "rollback", ""))
    c.keys(d, ("at", "deploy", "name", "target", "version"))
    if "deploy" not in d:
        raise ScenarioError(f'workload step {i}: expected "deploy": "module.py" or "rollback": "name"')
    step = WorkloadStep(i, at, c.string(d, "name", ""), c.string(d, "deploy", ""), c.string(d, "target", "*"))
    if d.get("version") is not None:
        step.version = c.string(d, "version", "")
    return step


def _regions(c: _Checker, v: Any) -> list[Region]:
    if not isinstance(v, list) or not 2 <= len(v) <= MAX_REGIONS:
        raise c.fail("regions", f'a list of 2..{MAX_REGIONS} regions ({{"name": ..., "hubs": N}})', v)
    out: list[Region] = []
    for i, d in enumerate(v):
        rc = _Checker(f"region {i}: ")
        if not isinstance(d, dict):
            raise ScenarioError(f"region {i}: expected an object, got {_got(d)}")
        rc.keys(d, ("name", "hubs"))
        name = d.get("name")
        if not isinstance(name, str) or not name or not all(ch.isalnum() or ch in "-_" for ch in name):
            raise rc.fail("name", "a non-empty name of letters, digits, - and _ (it is the cluster's name)", name)
        seen = [r.name for r in out]
        if name in seen:
            raise ScenarioError(f'region {i}: "name": {_got(name)} is the name of region {seen.index(name)} too')
        out.append(Region(name, rc.integer(d, "hubs", 1, 1, MAX_HUBS)))
    return out


def _service(d: dict[str, Any]) -> Service:
    c = _Checker("service: ")
    c.keys(d, ("subject", "queue", "workers", "rate", "timeout"))
    sv = Service()
    sv.subject = c.string(d, "subject", sv.subject)
    _subject(c, "subject", sv.subject)
    if "{edge}" in sv.subject:
        raise c.fail("subject", "a literal subject (the regions' service is not per edge)", sv.subject)
    sv.queue = c.string(d, "queue", sv.queue)
    if any(ch in sv.queue for ch in " \t\r\n.*>"):
        raise c.fail("queue", "a queue group name without spaces, dots or wildcards", sv.queue)
    sv.workers = c.integer(d, "workers", sv.workers, 1, MAX_WORKERS)
    sv.rate = c.number(d, "rate", sv.rate, 0.0, 100.0, strict=True)
    sv.timeout = c.number(d, "timeout", sv.timeout, 0.0, 60.0, strict=True)
    return sv


def hub_kind(v: Any) -> str | None:
    """A hub kind as written ("natsedge", "hub" or "nats-server") -> "hub" or "nats-server"; None if it is none."""
    k = KIND_ALIASES.get(v, v) if isinstance(v, str) else None
    return k if k in HUB_KINDS else None


def resolve_hubs(s: Scenario, hubs_flag: int | None, kinds_flag: list[str] | None) -> None:
    """Apply --hubs and --hub KIND[,KIND...] (already normalized) to the scenario: s.hubs and s.hub_kinds (one per
    node) are final afterwards. Flags override the file; a mismatch is an error naming the flag."""
    if kinds_flag is not None and len(kinds_flag) > 1:
        if hubs_flag is not None and hubs_flag != len(kinds_flag):
            raise ScenarioError(f"--hub lists {len(kinds_flag)} kinds but --hubs is {hubs_flag} (one kind per node, "
                                "or one kind for all)")
        s.hubs, s.hub_kinds = len(kinds_flag), list(kinds_flag)
        return
    if hubs_flag is not None:
        if kinds_flag is None and s.hub_kinds is not None and len(s.hub_kinds) != hubs_flag:
            raise ScenarioError(f'--hubs {hubs_flag}: the scenario\'s "hub_kinds" lists {len(s.hub_kinds)} kinds '
                                "(give --hub KIND for all nodes, or --hub KIND,KIND,... one per node)")
        s.hubs = hubs_flag
    if kinds_flag is not None:
        s.hub_kinds = kinds_flag * s.hubs
    elif s.hub_kinds is None:
        s.hub_kinds = ["hub"] * s.hubs


def parse(d: Any) -> Scenario:
    """A decoded JSON document -> Scenario (edge selectors are checked later, by validate())."""
    if not isinstance(d, dict):
        raise ScenarioError(f"expected a JSON object at the top level, got {_got(d)}")
    c = _Checker("")
    c.keys(d, ("name", "edges", "duration", "seed", "settle", "publish", "requests", "edge", "faults", "stream",
               "hubs", "hub_kinds", "workloads", "regions", "service"))
    s = Scenario()
    if "regions" in d:
        s.regions = _regions(c, d["regions"])
    elif "service" in d:
        raise ScenarioError('"service": the queue workers\' service needs "regions"')
    if s.regions:
        s.service = _service(c.obj(d, "service"))
        if d.get("stream") is not None:
            raise ScenarioError('"stream": not with "regions" (the super-cluster runs without JetStream)')
    s.name = c.string(d, "name", s.name)
    s.edges = c.integer(d, "edges", s.edges, 1, MAX_EDGES)
    kinds = d.get("hub_kinds")
    if kinds is not None:
        if not isinstance(kinds, list) or not 1 <= len(kinds) <= MAX_HUBS:
            raise c.fail("hub_kinds", f"null or a list of 1..{MAX_HUBS} hub kinds, one per node "
                                      f"({KINDS_EXPECTED})", kinds)
        s.hub_kinds = []
        for i, k in enumerate(kinds):
            kind = hub_kind(k)
            if kind is None:
                raise ScenarioError(f'"hub_kinds": node {i + 1}: expected {KINDS_EXPECTED}, got {_got(k)}')
            s.hub_kinds.append(kind)
    region_hubs = sum(r.hubs for r in s.regions)
    s.hubs = c.integer(d, "hubs", region_hubs or (len(s.hub_kinds) if s.hub_kinds else 1), 1,
                       MAX_HUBS)
    if s.hub_kinds is not None and len(s.hub_kinds) != s.hubs:
        n = len(s.hub_kinds)
        raise ScenarioError(f'"hub_kinds": lists {n} kind{"s" if n > 1 else ""} for {s.hubs} hubs (one per node, '
                            'or leave "hub_kinds" out)')
    s.duration = c.number(d, "duration", s.duration, 0.0)
    s.seed = c.integer(d, "seed", s.seed, 0)
    s.settle = c.number(d, "settle", s.settle, 0.0, strict=True)
    if "publish" in d:
        if not isinstance(d["publish"], list):
            raise c.fail("publish", "a list of publishers", d["publish"])
        s.publish = [_publisher(i, p) for i, p in enumerate(d["publish"])]
    req = c.obj(d, "requests")
    rc = _Checker("requests: ")
    rc.keys(req, ("subject", "rate", "timeout"))
    s.request_subject = rc.string(req, "subject", s.request_subject)
    _subject(rc, "subject", s.request_subject)
    s.request_rate = rc.number(req, "rate", s.request_rate, 0.0, 100.0)
    s.request_timeout = rc.number(req, "timeout", s.request_timeout, 0.0, 60.0, strict=True)
    edge = c.obj(d, "edge")
    ec = _Checker("edge: ")
    ec.keys(edge, ("stats", "heapsize", "lan", "limits", "config"))
    s.stats = ec.number(edge, "stats", s.stats, 0.0)
    heap = edge.get("heapsize")
    if heap is not None:
        if isinstance(heap, bool) or not isinstance(heap, (int, str)) or not str(heap).rstrip("kKmM").isdigit():
            raise ec.fail("heapsize", 'null, a number of bytes or a string such as "200K"', heap)
        s.heapsize = str(heap)
    lan = edge.get("lan", False)
    if not isinstance(lan, bool):
        raise ec.fail("lan", "true or false", lan)
    s.lan = lan
    s.limits = ec.obj(edge, "limits")
    s.extra_config = ec.obj(edge, "config")
    for k in s.extra_config:
        if k in SIM_OWNED_KEYS:
            raise ScenarioError(f'edge: "config" may not set "{k}": the simulator sets it'
                                + (' (use "edge.limits")' if k == "limits" else ""))
    faults = d.get("faults", [])
    if not isinstance(faults, list):
        raise c.fail("faults", "a list of faults", faults)
    s.faults = [_fault(i, f) for i, f in enumerate(faults)]
    steps = d.get("workloads", [])
    if not isinstance(steps, list):
        raise c.fail("workloads", "a list of workload steps", steps)
    s.workloads = [_workload_step(i, w) for i, w in enumerate(steps)]
    stream = d.get("stream")
    if stream is not None:
        sc = _Checker("stream: ")
        if not isinstance(stream, dict):
            raise c.fail("stream", 'null or {"name": ..., "subjects": [...]}', stream)
        sc.keys(stream, ("name", "subjects"))
        name = sc.string(stream, "name", "SIM")
        if any(ch in name for ch in " .*>\t"):
            raise sc.fail("name", "a stream name without spaces, dots or wildcards", name)
        subjects = stream.get("subjects", ["sim.*.tele"])
        if not isinstance(subjects, list) or not subjects or not all(isinstance(x, str) for x in subjects):
            raise sc.fail("subjects", "a non-empty list of subjects", subjects)
        for x in subjects:
            _subject(sc, "subjects", x, wildcards=True)
        s.stream = {"name": name, "subjects": subjects}
    return s


def validate(s: Scenario) -> None:
    """Checks that depend on the final edge count and duration (flags may change both after parse())."""
    names = set(s.edge_names())
    if s.regions and sum(r.hubs for r in s.regions) != s.hubs:
        raise ScenarioError(f'"regions": their hubs add up to {sum(r.hubs for r in s.regions)}, but the run has '
                            f"{s.hubs} hub nodes (leave out \"hubs\" and --hubs with regions)")
    if s.regions and s.edges < len(s.regions):
        raise ScenarioError(f'"edges": {s.edges} edges for {len(s.regions)} regions (at least one each)')

    def check_selector(where: str, sel: Any) -> None:
        if isinstance(sel, list):
            for x in sel:
                if isinstance(x, int) and x >= s.edges:
                    raise ScenarioError(f'{where}"edges": edge {x} does not exist (the fleet has {s.edges} edges, '
                                        f"0..{s.edges - 1})")
                if isinstance(x, str) and x not in names:
                    raise ScenarioError(f'{where}"edges": no edge named {_got(x)} '
                                        f"(names are edge-0..edge-{s.edges - 1})")

    for i, p in enumerate(s.publish):
        check_selector(f"publish {i}: ", p.edges)
    for f in s.faults:
        if f.edges is not None:
            check_selector(f"fault {f.index}: ", f.edges)
        if f.type in WORKER_FAULTS and f.region not in [r.name for r in s.regions]:
            raise ScenarioError(f'fault {f.index}: "region": no region named {_got(f.region)}'
                                + (f' (regions: {", ".join(r.name for r in s.regions)})' if s.regions
                                   else ' (the scenario has no "regions")'))
        if f.node is not None and f.node > s.hubs:
            raise ScenarioError(f'fault {f.index}: "node": hub node {f.node} does not exist (the run has {s.hubs} '
                                f"hub{'s' if s.hubs > 1 else ''}, 1..{s.hubs})")
        if s.duration and f.at >= s.duration:
            raise ScenarioError(f'fault {f.index}: "at": {f.at:g} s is not before the end of the run '
                                f"(duration {s.duration:g} s)")
        if f.type == "partition" and f.every is not None and f.every <= f.duration:
            raise ScenarioError(f'fault {f.index}: "every" ({f.every:g} s) must be longer than "for" '
                                f"({f.duration:g} s)")
    for w in s.workloads:
        if s.duration and w.at >= s.duration:
            raise ScenarioError(f'workload step {w.index}: "at": {w.at:g} s is not before the end of the run '
                                f"(duration {s.duration:g} s)")
    limits = dict(DEFAULT_LIMITS)
    limits.update(s.limits)
    max_payload = limits.get("max_payload", 8192)
    for i, p in enumerate(s.publish):
        # payload = "NAME BOOT IDX SEQ " + padding: leave room for the head
        if isinstance(max_payload, int) and p.size + 64 > max_payload:
            raise ScenarioError(f'publish {i}: "size": {p.size} bytes plus the 64-byte head exceeds the edge\'s '
                                f"max_payload ({max_payload})")


def load(path: str | None) -> Scenario:
    if path is None:
        return Scenario()
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise ScenarioError(f"cannot read scenario {path}: {e.strerror or e}") from None
    try:
        d = json.loads(text)
    except ValueError as e:
        raise ScenarioError(f"scenario {path} is not valid JSON: {e}") from None
    s = parse(d)
    for w in s.workloads:  # a deploy's module: from the scenario file's folder, and readable now, not at its time
        if w.module is not None:
            module = Path(path).parent / w.module
            if not module.is_file():
                raise ScenarioError(f'workload step {w.index}: "deploy": cannot read {module}')
            w.module = str(module)
    return s

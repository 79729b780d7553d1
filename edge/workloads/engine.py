# edge/workloads/engine.py — workloads pushed to this edge over NATS (`natsedge workload deploy`, docs/workloads.md).
#
# The desired state is one JSON value per workload in a KV bucket, read through the offline KV cache; the code is
# in the object store bucket of the same name. For every workload whose target names this edge (else whose previous
# version's target does: a staged rollout) the engine fetches the code of that version, checks its sha256, keeps it
# on flash, imports it and calls its setup(ctx).
# Rules this file keeps:
# 1. A download streams: each object store chunk (1 KB, one direct-get message) is written to `<file>.tmp` as it
#    arrives, inside the leaf's route(), and hashed on the way; only a complete file with the right size and sha256
#    is renamed to its name. A power cut mid-download leaves the old file and the old record: the old version runs
#    after the reboot and the new one is fetched again from the start.
# 2. What runs after a reboot is in `<dir>/state.json` (written to a temp file, then renamed): per workload the
#    last good version and the one before it, and the versions that failed here, which are never tried again.
# 3. A version is stopped and the last good one loaded again ("rolled back"; "failed" when there is none) when its
#    import or setup() raises, when the heap they take is over limits.max_heap, when a handler call takes longer
#    than limits.max_ms (measured after it returns: MicroPython cannot stop a running call), or when
#    limits.max_errors handler calls in a row raise (a ServiceError is an answer, not a failure).
# 4. Everything the module binds goes through its ctx (subscribe, service, task), so stopping it unbinds all of it.
# 5. A report per workload goes to $EDGE.<name>.workloads on every change and every `status` seconds.

import asyncio
import binascii
import gc
import hashlib
import json
import os
import sys

from edge.compat import IS_MP, drop_module, mem_alloc, ticks_diff, ticks_ms
from edge.leaf.broker import log_exc
from edge.leaf.jsclient import JsClient, JsError

RUNNING = "running"
FAILED = "failed"
ROLLED_BACK = "rolled back"
_CODE = "mpy" if IS_MP else "py"  # which of the two compiled forms this interpreter loads
_BATCH = 8  # chunks asked for per direct get: 8 KB in flight at most
_REPLY_MS = 5000
_SYS_QUEUE = [b"_sys_"]  # direct gets are served in this queue group, which a leaf must name


def glob_match(pattern, name):
    # fnmatch's * and ? (MicroPython has no fnmatch), iteratively with one backtrack point.
    p = n = 0
    star = mark = -1
    while n < len(name):
        if p < len(pattern) and (pattern[p] == "?" or pattern[p] == name[n]):
            p += 1
            n += 1
        elif p < len(pattern) and pattern[p] == "*":
            star, mark = p, n
            p += 1
        elif star >= 0:
            p = star + 1
            mark += 1
            n = mark
        else:
            return False
    while p < len(pattern) and pattern[p] == "*":
        p += 1
    return p == len(pattern)


def targets(target, name, tags):
    for t in target:
        if t[:4] == "tag:":
            if t[4:] in tags:
                return True
        elif glob_match(t, name):
            return True
    return False


def _exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


def _remove(path):
    try:
        os.remove(path)
    except OSError:
        pass


class Ctx:
    # What a workload's setup(ctx) gets: the leaf, its name and version, and the calls that bind handlers.
    def __init__(self, engine, wl):
        self.leaf = engine.leaf
        self.name = wl.name
        self.version = wl.version
        self._wl = wl

    def subscribe(self, subject, handler, queue=None):
        # handler(msg); what it returns, when not None and the message has a reply subject, is the answer.
        sub = self.leaf.subscribe(subject, _Guard(self._wl, handler, True), queue)
        self._wl.subs.append(sub)
        return sub

    def service(self, name, version, description=None, metadata=None):
        # A NATS Micro service (edge/micro): its endpoints' handlers are counted and timed as subscriptions are.
        svc = self.leaf.service(name, version, description, metadata)
        self._wl.services.append(svc)
        return svc

    def task(self, coro):
        t = asyncio.create_task(coro)
        self._wl.tasks.append(t)
        return t

    def log(self, msg):
        self._wl.engine.log("workload %s: %s" % (self.name, msg))


class _Guard:
    # A handler as the leaf or an endpoint calls it: counts calls and failures, times each call (rule 3).
    def __init__(self, wl, fn, answer):
        self.wl = wl
        self.fn = fn
        self.answer = answer

    def __call__(self, msg):
        t0 = ticks_ms()
        try:
            r = self.fn(msg)
        except Exception as e:
            self.wl.called(t0, e)
            raise
        if r is not None and hasattr(r, "send"):
            return self._finish(msg, r, t0)
        self.wl.called(t0, None)
        return self._answer(msg, r)

    async def _finish(self, msg, coro, t0):
        try:
            r = await coro
        except Exception as e:
            self.wl.called(t0, e)
            raise
        self.wl.called(t0, None)
        return self._answer(msg, r)

    def _answer(self, msg, r):
        if self.answer and r is not None and msg._reply:
            msg.respond(r)
            return None
        return r


class Workload:
    def __init__(self, engine, name):
        self.engine = engine
        self.name = name
        self.version = None  # the version loaded, or None
        self.wanted = None  # the version the desired state names for this edge
        self.sha = None
        self.limits = None
        self.mod = None
        self.state = None
        self.error = None
        self.requests = 0
        self.errors = 0
        self.in_row = 0
        self.heap = 0
        self.trouble = None  # set by a handler call that broke a limit; the engine acts on it (rule 3)
        self.subs = []
        self.services = []
        self.tasks = []

    def called(self, t0, err):
        self.requests += 1
        ms = ticks_diff(ticks_ms(), t0)
        lim = self.limits
        if err is not None and type(err).__name__ != "ServiceError":
            self.errors += 1
            self.in_row += 1
            self.error = "%s: %s" % (type(err).__name__, err)
            if self.in_row >= lim["max_errors"]:
                self.trouble = "%d handler calls in a row raised, the last %s" % (self.in_row, self.error)
        else:
            self.in_row = 0
        if ms > lim["max_ms"]:
            self.trouble = "a handler call took %d ms, over limits.max_ms %d" % (ms, lim["max_ms"])
        if self.trouble is not None:
            self.engine.wake = True

    def report(self):
        return {"name": self.name, "version": self.version, "wanted": self.wanted, "state": self.state,
                "requests": self.requests,
                "errors": self.errors, "heap": self.heap, "error": self.error}


class Engine:
    def __init__(self, leaf, cfg, data_dir, log):
        self.leaf = leaf
        self.tags = cfg["tags"]
        self.log = log
        self.bucket = cfg["bucket"]
        self.max_flash = cfg["max_flash"]
        self.status_ms = cfg["status_ms"]
        self.dir = cfg["dir"] or data_dir + "/wl"
        self.subject = "$EDGE.%s.workloads" % leaf.name
        self.wls = {}  # name -> Workload
        self.saved = {}  # name -> {"good": [version, sha, limits], "prev": [...] or None, "bad": [sha, ...]}
        self.wake = True
        self.pending = False  # a wanted version is not fetched yet (link down, transfer broken): retried every 2 s
        self.changed = True
        self.js = None
        self.fetch = None  # [token, file, hash, bytes written, last stream seq, done, error]

    # ---- start, stop -------------------------------------------------------------------------

    async def run(self):
        # The runner cancels this task when the leaf stops: the workloads' teardown runs then (the finally below).
        try:
            await self._run()
        finally:
            self.close()

    async def _run(self):
        self._prepare_dir()
        for name in self.saved:
            rec = self.saved[name]["good"]
            if rec is not None:  # rule 2: the last good version runs from flash, hub or no hub
                wl = self.wls[name] = Workload(self, name)
                if not self._load(wl, rec):
                    self._give_up(wl, rec[1])
        kv = self.leaf.kv(self.bucket)
        kv.watch(">", self._on_change)
        self.js = JsClient(self.leaf, self._on_chunk)
        last_report = ticks_ms()
        retry = ticks_ms()
        while True:
            if self.wake or (self.pending and ticks_diff(ticks_ms(), retry) > 2000):
                self.wake = self.pending = False
                retry = ticks_ms()
                for wl in list(self.wls.values()):
                    if wl.trouble is not None:
                        self._fail(wl, wl.trouble)
                try:
                    await self._reconcile(kv)
                except Exception as e:  # a bad state value or a full flash: say so, keep the running versions
                    self.log("workloads: %r" % (e,))
                    log_exc(e)
            if self.changed or (self.status_ms and ticks_diff(ticks_ms(), last_report) >= self.status_ms):
                self.changed = False
                last_report = ticks_ms()
                self._publish_report()
            await asyncio.sleep(0.05)

    def close(self):
        for wl in self.wls.values():
            self._unload(wl)

    def _on_change(self, entry):
        self.wake = True

    def _prepare_dir(self):
        path = ""
        for part in self.dir.split("/"):
            path = path + "/" + part if path or self.dir[0] == "/" else part
            if part and not _exists(path):
                os.mkdir(path)
        if self.dir not in sys.path:
            sys.path.insert(0, self.dir)
        try:
            with open(self.dir + "/state.json") as f:
                self.saved = json.loads(f.read())
        except OSError:
            self.saved = {}
        except ValueError:  # only a rename ever replaces the file: not expected, but never fatal
            self.log("workloads: %s/state.json unreadable, starting without it" % self.dir)
            self.saved = {}

    def _save(self):
        tmp = self.dir + "/state.json.tmp"
        with open(tmp, "w") as f:
            f.write(json.dumps(self.saved))
        os.rename(tmp, self.dir + "/state.json")

    # ---- desired state -> what runs ----------------------------------------------------------

    async def _reconcile(self, kv):
        wanted = {}
        for key in kv.keys():
            raw = kv.get(key)
            if not raw:
                continue
            try:
                st = json.loads(raw)
                if not isinstance(st["target"], list):
                    raise TypeError
                prev = st["previous"]
                if targets(st["target"], self.leaf.name, self.tags):
                    wanted[key] = st
                elif prev is not None and targets(prev["target"], self.leaf.name, self.tags):
                    wanted[key] = prev  # a staged rollout: the edges the new target leaves out stay where they were
            except (ValueError, KeyError, TypeError):
                self.log("workloads: the state of %s is not a workload state, ignored" % key)
        for name in list(self.wls):
            # A key the cache does not hold is a removal only once the cache is in step with the hub: after a power
            # cut the cache may have lost its last group of writes (docs/kvcache.md), the saved state has not.
            if name not in wanted and (kv.get(name) or kv.status()["synced"]):
                self._drop(name)
        for name in wanted:
            await self._want(name, wanted[name])

    async def _want(self, name, st):
        code = st[_CODE]
        sha = code["sha256"]
        wl = self.wls.get(name)
        saved = self.saved.get(name)
        if wl is not None:
            self.changed = self.changed or wl.wanted != st["version"]
            wl.wanted = st["version"]
            if wl.sha == sha:  # the same code: a new version name or new limits take effect without a reload
                if wl.version != st["version"] or wl.limits != st["limits"] or wl.state != RUNNING:
                    # (or the hub now wants the version this edge rolled back to: it runs as wanted)
                    wl.version, wl.limits, wl.state = st["version"], st["limits"], RUNNING
                    if saved is not None and saved["good"] and saved["good"][1] == sha:
                        saved["good"] = [wl.version, sha, wl.limits]
                        self._save()
                    self.changed = True
                return
        if wl is None:
            wl = self.wls[name] = Workload(self, name)
            wl.wanted = st["version"]
        if saved is not None and sha in saved["bad"]:
            if wl.mod is None and wl.state is None:  # after a reboot, with no good version to run
                wl.state = FAILED
                wl.error = "%s %s failed here before" % (name, st["version"])
            return  # failed here before (rule 2): stays on the version it rolled back to
        if code["size"] > self.max_flash:
            self._mark_bad(wl, sha, st["version"], "the code is %d B, over workloads.max_flash %d" % (
                code["size"], self.max_flash))
            return
        path = self._file(name, sha)
        if not _exists(path) and not await self._download(code, path):
            self.pending = True  # link down or a broken transfer: tried again later
            return
        rec = [st["version"], sha, st["limits"]]
        old = self.saved.get(name)
        self._unload(wl)
        if self._load(wl, rec):
            bad = old["bad"] if old else []
            prev = old["good"] if old and old["good"] and old["good"][1] != sha else (old["prev"] if old else None)
            self.saved[name] = {"good": rec, "prev": prev, "bad": bad}
            self._save()
            self._tidy(name)
        else:
            self._give_up(wl, sha)

    def _file(self, name, sha):
        return "%s/%s.%s" % (self.dir, self._modname(name, sha), _CODE)

    @staticmethod
    def _modname(name, sha):
        return "wl_%s_%s" % (name.replace("-", "_"), sha[:12])

    def _tidy(self, name, keep_versions=True):
        # Only the good and the previous version stay on flash; a temp file a power cut left goes too.
        s = self.saved.get(name)
        keep = [self._modname(name, r[1]) + "." + _CODE for r in (s["good"], s["prev"]) if r] if keep_versions and s \
            else []
        prefix = "wl_%s_" % name.replace("-", "_")
        for f in os.listdir(self.dir):
            rest = f[len(prefix):]
            if f[: len(prefix)] == prefix and len(rest) > 13 and rest[12] == "." and f not in keep:
                try:
                    int(rest[:12], 16)  # wl_<name>_<12 hex of the sha256>.<ext>[.tmp], never another workload's
                except ValueError:
                    continue
                _remove(self.dir + "/" + f)

    def _drop(self, name):
        wl = self.wls.pop(name)
        self._unload(wl)
        if self.saved.pop(name, None) is not None:
            self._save()
        self._tidy(name, False)
        self.log("workload %s removed" % name)
        self.changed = True

    # ---- load, unload, roll back -------------------------------------------------------------

    def _load(self, wl, rec):
        version, sha, limits = rec
        modname = self._modname(wl.name, sha)
        wl.version, wl.sha, wl.limits = version, sha, limits
        wl.requests = wl.errors = wl.in_row = 0
        wl.trouble = wl.error = None
        gc.collect()
        before = mem_alloc()
        try:
            try:
                import importlib  # CPython caches folder listings: a file written this second may be missed

                importlib.invalidate_caches()
            except ImportError:
                pass
            wl.mod = __import__(modname)
            wl.mod.setup(Ctx(self, wl))
            for svc in wl.services:
                for ep in svc.endpoints:
                    ep.handler = _Guard(wl, ep.handler, False)
        except Exception as e:
            self._unload(wl)
            wl.error = "%s %s: setup failed: %s: %s" % (wl.name, version, type(e).__name__, e)
            self.log("workload " + wl.error)
            return False
        gc.collect()
        wl.heap = mem_alloc() - before if before >= 0 else 0
        if wl.heap > limits["max_heap"]:
            self._unload(wl)
            wl.error = "%s %s: takes %d B of heap, over limits.max_heap %d" % (wl.name, version, wl.heap,
                                                                               limits["max_heap"])
            self.log("workload " + wl.error)
            return False
        wl.state = RUNNING
        self.changed = True
        self.log("workload %s %s running heap=%d" % (wl.name, version, wl.heap))
        return True

    def _unload(self, wl):
        mod = wl.mod
        if mod is not None and hasattr(mod, "teardown"):
            try:
                mod.teardown(Ctx(self, wl))
            except Exception as e:
                log_exc(e)
        for s in wl.subs:
            s.unsubscribe()
        for svc in wl.services:
            svc.stop()
        for t in wl.tasks:
            t.cancel()
        wl.subs, wl.services, wl.tasks = [], [], []
        wl.mod = None
        if wl.sha is not None:
            drop_module(self._modname(wl.name, wl.sha))
        wl.version = wl.sha = None

    def _fail(self, wl, why):
        # A running version broke a limit (rule 3).
        sha, version = wl.sha, wl.version
        self.log("workload %s %s stopped: %s" % (wl.name, version, why))
        self._unload(wl)
        wl.error = "%s %s: %s" % (wl.name, version, why)
        self._give_up(wl, sha)

    def _give_up(self, wl, sha):
        # The version `sha` failed: never again here; back to the last good version, if there is one.
        s = self.saved.get(wl.name) or {"good": None, "prev": None, "bad": []}
        if sha not in s["bad"]:
            s["bad"].append(sha)
            del s["bad"][:-4]
        back = s["good"] if s["good"] and s["good"][1] != sha else s["prev"]
        s["good"], s["prev"] = back, None
        self.saved[wl.name] = s
        self._save()
        if back is None or back[1] != sha:
            _remove(self._file(wl.name, sha))  # never loaded again here
        error = wl.error
        if back is not None and _exists(self._file(wl.name, back[1])) and self._load(wl, back):
            wl.state = ROLLED_BACK
            self.log("workload %s rolled back to %s" % (wl.name, back[0]))
        else:
            wl.state = FAILED
        wl.error = error
        self.changed = True

    def _mark_bad(self, wl, sha, version, why):
        self.log("workload %s %s refused: %s" % (wl.name, version, why))
        wl.error = "%s %s: %s" % (wl.name, version, why)
        s = self.saved.setdefault(wl.name, {"good": None, "prev": None, "bad": []})
        s["bad"].append(sha)
        del s["bad"][:-4]
        self._save()
        if wl.mod is None:
            wl.state = FAILED
        self.changed = True

    # ---- download (rule 1) ---------------------------------------------------------------

    async def _download(self, code, path):
        js = self.js
        if js.link() is None:
            return False
        tmp = path + ".tmp"
        subject = "$O.%s.C.%s" % (self.bucket, code["nuid"])
        f = open(tmp, "wb")
        fx = self.fetch = [None, f, hashlib.sha256(), 0, 0, False, None]
        try:
            while fx[3] < code["size"]:
                js.n += 1
                fx[0] = b"%d" % js.n
                fx[5] = False
                req = {"seq": fx[4] + 1, "batch": _BATCH, "next_by_subj": subject}
                if not js.send("$JS.API.DIRECT.GET.OBJ_" + self.bucket, json.dumps(req), js.inbox + b"c." + fx[0],
                               None, _SYS_QUEUE):
                    raise JsError("hub link congested")
                if not await js.wait(lambda: fx[5], _REPLY_MS, lambda: fx[3]):
                    raise JsError("no chunks from the hub")
                if fx[6] is not None:
                    raise JsError(fx[6])
            f.close()
            if fx[3] != code["size"] or binascii.hexlify(fx[2].digest()).decode() != code["sha256"]:
                raise JsError("%d B with another sha256 than the state's" % fx[3])
            os.rename(tmp, path)
            return True
        except (JsError, OSError) as e:
            f.close()
            _remove(tmp)
            self.log("workloads: download of %s failed: %s" % (path, e))
            return False
        finally:
            self.fetch = None

    def _on_chunk(self, kind, token, reply, hdr, payload):
        # Inside the leaf's route(): never awaits (edge/leaf/jsclient.py rule 1).
        fx = self.fetch
        if fx is None or kind != b"c" or token != fx[0] or fx[5]:
            return
        if hdr and hdr[8:9] == b" ":  # a status line: 204 EOB ends the batch, anything else is an error
            fx[5] = True
            if hdr[9:12] != b"204":
                fx[6] = "direct get: " + bytes(hdr[9:hdr.find(b"\r\n")]).decode()
            return
        i = hdr.find(b"Nats-Sequence:") if hdr else -1
        if i >= 0:
            j = hdr.find(b"\r\n", i)
            fx[4] = int(bytes(hdr[i + 14 : j if j >= 0 else len(hdr)]).strip())
        try:
            fx[1].write(payload)
        except OSError as e:
            fx[6] = "flash write: %s" % (e,)
            fx[5] = True
            return
        fx[2].update(payload)
        fx[3] += len(payload)

    # ---- reports (rule 5) --------------------------------------------------------------------

    def _publish_report(self):
        ws = [wl.report() for wl in self.wls.values()]
        try:
            self.leaf.publish(self.subject, json.dumps({"edge": self.leaf.name, "workloads": ws}))
        except Exception as e:  # a report too big for max_payload must not stop the engine
            self.log("workloads: report not sent: %r" % (e,))

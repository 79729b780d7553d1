"""Regions of a super-cluster run (docs/sim.md, "Regions"): each region's queue workers and requester, what its
requests got, and the per-region figures of the report.

A region's workers are the simulator's own connections to that region's hubs, members of one queue group on the
service subject; each answers with its region's name, so a reply says which region served the request. The
region's requester, also on that region's hubs, sends the scenario's requests; nats-server's rule (and the hub's)
is that a queue group is served by a member in the requester's cluster first, and by the nearest other cluster only
when none is left there. Killing a region's workers makes them leave (unsubscribe, confirmed
by their hub, then disconnect); starting them connects new ones.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

from sim.client import Client, NoResponders, NotConnected
from sim.scenario import Service

WORKER_CONNECT_TIMEOUT = 10.0
FAULT_SLACK_S = 0.5  # a lost request this close to a fault (before it, or before its reply was due) is explained


class Region:
    def __init__(self, name: str, client_urls: list[str], service: Service, clock: Callable[[], float]) -> None:
        self.name = name
        self.client_urls = client_urls
        self.service = service
        self.clock = clock
        self.workers: list[Client] = []
        self.requester = Client(client_urls, name=f"natsedge-sim-requester-{name}")
        # (t sent, t its outcome came, "local" | "remote:<region>" | "timeout" | "no_responders")
        self.requests: list[tuple[float, float, str]] = []
        # (t, the local workers' state from then on): "leaving" / "starting" while a fault works on them, then "down"
        # / "up"; the run begins "up"
        self.worker_events: list[tuple[float, str]] = []
        self.answered = 0  # requests its workers answered, from any region
        self._started = 0  # workers connected so far (names stay unique over restarts)

    @property
    def workers_up(self) -> bool:
        return bool(self.workers)

    def _serve(self, worker: Client) -> Callable[[bytes, bytes | None, bytes | None, bytes], None]:
        def on_request(subject: bytes, reply: bytes | None, hdr: bytes | None, payload: bytes) -> None:
            if reply:
                self.answered += 1
                try:
                    worker.publish(reply, self.name.encode())
                except NotConnected:
                    pass  # its connection just went: the requester times out, counted as lost
        return on_request

    async def start_workers(self) -> str | None:
        """Connect the region's workers (queue subscribers, spread over its hubs) and wait until each hub has their
        subscriptions; an error text if one cannot connect."""
        again = self.clock() > 0  # not the start of the run: the workers_start fault
        if again:
            self.worker_events.append((self.clock(), "starting"))
        n = len(self.client_urls)
        for _ in range(self.service.workers):
            k = self._started
            self._started += 1
            urls = [self.client_urls[(k + j) % n] for j in range(n)]
            worker = Client(urls, name=f"natsedge-sim-worker-{self.name}-{k}")
            worker.subscribe(self.service.subject, self._serve(worker), self.service.queue)
            worker.start()
            self.workers.append(worker)
        for w in self.workers:
            if not await w.wait_connected(WORKER_CONNECT_TIMEOUT):
                return f"region {self.name}: worker {w.name} cannot connect: {w.last_error}"
            await w.flush()  # its SUB is in place on its hub
        if again:
            self.worker_events.append((self.clock(), "up"))
        return None

    async def kill_workers(self) -> None:
        """The workers leave: each unsubscribes, waits for its hub to confirm (a PING's PONG), then disconnects. The
        window without local workers opens then: from now on no hub of the region has them as local members (a
        request already on its way to one is lost, and explained by the fault)."""
        self.worker_events.append((self.clock(), "leaving"))
        workers, self.workers = self.workers, []
        for w in workers:
            for sid in w.sids():
                w.unsubscribe(sid)
        await asyncio.gather(*(self._flushed(w) for w in workers))
        await asyncio.gather(*(w.close() for w in workers))
        self.worker_events.append((self.clock(), "down"))

    @staticmethod
    async def _flushed(worker: Client) -> None:
        with contextlib.suppress(NotConnected, TimeoutError):  # not connected: it has no subscription on a hub
            await worker.flush()

    async def request(self) -> None:
        """One request from this region's requester; its outcome recorded under the time it was sent."""
        if not self.requester.connected:
            return
        t = self.clock()
        try:
            served_by = (await self.requester.request(self.service.subject, b"work", self.service.timeout)).decode(
                errors="replace")
            outcome = "local" if served_by == self.name else f"remote:{served_by}"
        except NoResponders:
            outcome = "no_responders"
        except TimeoutError:
            outcome = "timeout"
        except NotConnected:
            return  # never left the simulator
        self.requests.append((t, self.clock(), outcome))

    async def close(self) -> None:
        await asyncio.gather(self.requester.close(), *(w.close() for w in self.workers))

    # ---- the report ---------------------------------------------------------------------------------------------

    def _lost_explained(self, t: float, fault_times: list[float]) -> bool:
        return any(t - FAULT_SLACK_S <= f <= t + self.service.timeout + FAULT_SLACK_S for f in fault_times)

    def _count(self, requests: list[tuple[float, float, str]], fault_times: list[float]) -> dict[str, Any]:
        c: dict[str, Any] = {"sent": len(requests), "local": 0, "remote": 0, "lost": 0, "lost_in_fault": 0,
                             "served_by": {}}
        for t, _done, outcome in requests:
            if outcome == "local":
                c["local"] += 1
            elif outcome.startswith("remote:"):
                c["remote"] += 1
            elif self._lost_explained(t, fault_times):
                c["lost_in_fault"] += 1
            else:
                c["lost"] += 1
            if outcome == "local" or outcome.startswith("remote:"):
                by = outcome.partition(":")[2] or self.name
                c["served_by"][by] = c["served_by"].get(by, 0) + 1
        return c

    def _window_of(self, bounds: list[tuple[float, float, str]], sent: float, done: float) -> int:
        """The window a request counts in: the one it was sent in, unless the workers changed state while it
        waited for its outcome: then the transition ("leaving", "starting") next to that change, where either
        region may serve it (sent a moment before the workers left, the hub may already have none of them)."""
        spans = [i for i, (start, upto, _state) in enumerate(bounds) if start <= done and sent < upto]
        first = next((i for i, (start, upto, _state) in enumerate(bounds) if start <= sent < upto), 0)
        return next((i for i in spans if bounds[i][2] in ("leaving", "starting")), first)

    def report(self, nodes: list[str], edges: list[str], fault_times: list[float], end: float) -> dict[str, Any]:
        """Totals, and one window per state of this region's workers: "up", "leaving" (a workers_kill under way),
        "down", "starting" (a workers_start until every worker is subscribed), ... A request counts in the window
        it was sent in, or in the transition next to a change that came while it waited (_window_of). `lost` are
        requests without an answer that no fault explains; `lost_in_fault` those sent within FAULT_SLACK_S + the
        timeout before a fault (of workers or hubs, in any region)."""
        bounds, start, state = [], 0.0, "up"
        for t, after in [*self.worker_events, (end, None)]:
            # the last window: whatever was sent until the end
            bounds.append((start, t if after is not None else float("inf"), state))
            if after is not None:
                start, state = t, after
        per_window: list[list[tuple[float, float, str]]] = [[] for _ in bounds]
        for r in self.requests:
            per_window[self._window_of(bounds, r[0], r[1])].append(r)
        windows = [{"from": round(start, 2), "to": round(end if upto == float("inf") else upto, 2),
                    "local_workers": state, **self._count(reqs, fault_times)}
                   for (start, upto, state), reqs in zip(bounds, per_window, strict=True)]
        return {"name": self.name, "nodes": nodes, "edges": edges, "workers": self.service.workers,
                "workers_running": len(self.workers), "answered": self.answered,
                "requests": self._count(self.requests, fault_times), "windows": windows}

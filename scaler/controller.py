"""The reconcile loop of one ``[[scalers]]`` entry: observe -> reconcile -> decide -> act.

Theory of operation
-------------------
Every ``interval`` (sooner when the provider reports a death, or lb reports demand that
leaves zero or jumps) ``PoolScaler.tick`` runs once, start to end; ticks of one pool never
overlap, so there is a single writer of its members. The tasks beside the loop
(``follow_events``, ``follow_demand``) only set ``wake``; they never act.

1. **Observe.** The provider lists its members (adopting those an earlier scaler started);
   every lb instance lists the pool's backends. Backends registered by the scaler carry the
   metadata ``managed-by = scaler``; the others (from config.toml or an operator) are not
   touched.
2. **Reconcile.** A dead member is cleaned up; a registered address without a live member is
   deregistered (``force``: nothing serves there); a live member that is not registered is
   registered (adoption after a restart, or a registration that failed earlier).
3. **Decide.** lb's stats and the pool's demand (in flight + queued + held, from
   ``GET /v1/pools/{pool}/demand``; an older lb without it: the pool's in-flight count)
   become one sample per member (``scaler/observe.py``), and the pure policy
   (``scaler/policy.py``) returns the desired count and its reason.
4. **Act.** *Up:* create members concurrently; each is registered as soon as it listens,
   starts ``checking`` and takes traffic once a health check passes. A failed start was
   cleaned up by the provider; it is reported and further starts back off (``backoff``,
   doubling up to ``backoff_max``). *Down:* victims are the members with the fewest in-flight
   requests, newest first. Each is drained through the API, waited for until removable or
   ``drain_timeout``, stopped gracefully, removed, and deregistered.

A removal is an intent that survives restarts: the ids being removed are written to the
status file before the drain starts, and a restarted scaler (or the next tick, if lb was
unreachable) finishes them. Members being removed do not count as current replicas.

Every decision and action is a structured log line (``event`` field), is kept for
``lb-scaler status``, and is posted to lb (``POST /v1/pools/{pool}/events``) when
``publish_events`` is on. Holding decisions are logged at info level only when they change.

The loop never stops a member because lb is unreachable: without lb it only waits.

**Several lb instances.** "lb" above is ``self.fleet`` (``scaler/fleet.py``): the local
control socket and the admin listeners of other instances. Registrations, drains and
deregistrations go to every instance; the reconcile step resyncs each one that answers from
its own list (so one that restarted or was away is brought back in step); stats and demand
are summed over them. A removal waits for every instance that answers to say removable, and
for one that does not answer at most ``drain_timeout``; with no instance answering, it waits.

**Demand, as it happens.** ``follow_demand`` long-polls lb's demand API (``after`` the last
sequence number seen, up to ``DEMAND_WAIT`` seconds). When requests wait and no backend is
eligible (zero members) the loop wakes at once (the first held request at zero members starts
a member now, not at the next interval); when the demand jumps (``policy.is_jump`` against
the demand the last tick saw: at least twice as much and one ``target`` more, for
``inflight_per_backend``) the loop wakes after ``JUMP_SETTLE``, so that a burst still
arriving is seen whole by one decision. An lb
without the API (404) or an unreachable one leaves the loop on its interval: the watcher
backs off, logs once, and tries again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from lb.control.client import ApiError, ControlClient, ControlClientError, Unreachable
from lb.control.models import BackendStats
from scaler.config import ScalerConfig
from scaler.fleet import LOCAL, Drained, Fleet, Instance
from scaler.observe import pick_victims, samples
from scaler.policy import Decision, Policy, PolicySpec, is_jump
from scaler.providers.base import (
    MANAGED_BY,
    CpuSample,
    Member,
    Provider,
    ProviderError,
    cpu_percent,
)

log = logging.getLogger("scaler")

KEEP = 20  # decisions and actions kept for `lb-scaler status`
PUBLISH_TIMEOUT = 2.0
DEMAND_WAIT = 25.0  # seconds one long-poll of the demand API may wait for a change
DEMAND_GAP = 0.05  # at least this between two polls, so a busy pool is not a busy loop
# After a failed poll: from the first, doubling up to the second (lb unreachable: it may be
# restarting, and a cold start waits on this) or the third (no API, or a refusal).
DEMAND_BACKOFF = (0.5, 5.0, 60.0)
JUMP_SETTLE = 0.25  # a jump wakes the loop after this, so that one decision sees the burst


def spec_of(sc: ScalerConfig) -> PolicySpec:
    return PolicySpec(
        min=sc.min,
        max=sc.max,
        target=sc.target,
        metric=sc.metric,
        tolerance=sc.tolerance,
        scale_up_stabilization=sc.scale_up_stabilization,
        scale_down_stabilization=sc.scale_down_stabilization,
        period=sc.period,
        max_add=sc.max_add,
        max_add_percent=sc.max_add_percent,
        max_remove=sc.max_remove,
        max_remove_percent=sc.max_remove_percent,
        scale_to_zero_after=sc.scale_to_zero_after,
        panic_window=sc.panic_window,
        panic_threshold=sc.panic_threshold,
    )


class PoolScaler:
    def __init__(
        self,
        sc: ScalerConfig,
        provider: Provider,
        lb: ControlClient | Sequence[Instance],
        *,
        resume: set[str] | None = None,
        on_change: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.sc = sc
        self.pool = sc.pool
        self.provider = provider
        # Every lb instance this pool is kept in step on; one ControlClient is a fleet of one.
        instances = list(lb) if isinstance(lb, Sequence) else [Instance(LOCAL, lb)]
        self.fleet = Fleet(sc.pool, instances, self)
        self.counts: dict[str, int] = {}  # actions by kind, for the scaler's metrics
        self.clock = clock
        self.on_change = on_change  # the runner persists the status (and the removal intents)
        self.policy: Policy | None = None
        self.removing: set[str] = set(resume or ())  # member ids whose removal is under way
        self.members: list[Member] = []
        self.stats: dict[str, BackendStats] = {}  # by address
        self.eligible = 0  # backends of the pool eligible for traffic (lb's stats)
        self.decisions: deque[dict[str, Any]] = deque(maxlen=KEEP)
        self.actions: deque[dict[str, Any]] = deque(maxlen=KEEP)
        self.last: Decision | None = None
        self.demand: int | None = None  # the pool's demand as the last tick saw it
        self._demand_api = True  # False: lb has no demand API (older lb); use its stats
        self._settle: asyncio.TimerHandle | None = None
        self.failures = 0
        self.retry_at = 0.0
        self.last_error = ""
        self.wake = asyncio.Event()
        self._logged_key: tuple[Any, ...] | None = None
        self._cpu: dict[str, CpuSample] = {}
        self._outbox: list[dict[str, Any]] = []
        self._publish = sc.publish_events
        self._reported_dead: set[str] = set()

    # -- reporting ------------------------------------------------------------------------------

    def _event(
        self, kind: str, message: str, level: int = logging.INFO, **fields: Any
    ) -> dict[str, Any]:
        doc = {"time": round(time.time(), 3), "kind": kind, "message": message, **fields}
        log.log(
            level,
            "%s: %s",
            self.pool,
            message,
            extra={"event": {"event": f"scaler_{kind}", "pool": self.pool, **fields}},
        )
        return doc

    def action(self, kind: str, message: str, level: int = logging.INFO, **fields: Any) -> None:
        doc = self._event(kind, message, level, **fields)
        self.counts[kind] = self.counts.get(kind, 0) + 1
        self.actions.append(doc)
        self._queue(doc)

    def _queue(self, doc: dict[str, Any]) -> None:
        if not self._publish:
            return
        data = {
            k: v
            for k, v in doc.items()
            if k not in ("time", "kind", "message", "current", "desired")
            and (v is None or isinstance(v, int | float | bool | str))
        }
        self._outbox.append(
            {
                "time": doc["time"],
                "kind": doc["kind"],
                "message": doc["message"][:2000],
                "current": doc.get("current"),
                "desired": doc.get("desired"),
                "data": {k: (v[:256] if isinstance(v, str) else v) for k, v in data.items()},
            }
        )
        del self._outbox[:-100]

    def _note_decision(self, d: Decision) -> None:
        self.last = d
        key = (d.action, d.current, d.desired, d.recommendation, d.limited_by, d.panic)
        changed = key != self._logged_key
        self._logged_key = key
        fields: dict[str, Any] = {
            "action": d.action,
            "current": d.current,
            "desired": d.desired,
            "metric": self.sc.metric,
            "value": None if d.value is None else round(d.value, 3),
            "target": self.sc.target,
            "ratio": None if d.ratio is None else round(d.ratio, 3),
            "recommendation": d.recommendation,
            "limited_by": d.limited_by,
            "panic": d.panic,
            "demand": self.demand,
        }
        level = logging.INFO if changed or d.action != "hold" else logging.DEBUG
        doc = self._event("decision", d.reason, level, **fields)
        if changed or d.action != "hold":
            self.decisions.append(doc)
            self._queue(doc)
        elif self.decisions:
            self.decisions[-1] = doc  # the same hold: keep its latest numbers

    async def publish(self) -> None:
        """Send queued events to lb (best effort: lb may be down or older)."""
        if not self._outbox or not self._publish:
            return
        batch, self._outbox = self._outbox, []
        sent = await self.fleet.post_events(
            f"/v1/pools/{self.pool}/events",
            {"source": "scaler", "events": batch},
            PUBLISH_TIMEOUT,
        )
        if sent == "off":
            self._publish = False
        elif sent == "retry":
            self._outbox = (batch + self._outbox)[-100:]  # lb is down: try with the next tick

    # -- the loop -------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Tick until ``stop`` is set; a tick in progress always finishes."""
        while not stop.is_set():
            self.wake.clear()
            try:
                await self.tick()
            except Exception:
                log.exception("%s: tick failed; trying again in %gs", self.pool, self.sc.interval)
            self.on_change()
            await self.publish()
            with contextlib.suppress(TimeoutError):
                # Until lb first answers, look again soon: they are often started together.
                async with asyncio.timeout(self.sc.interval if self.fleet.seen else 0.25):
                    await _first(stop.wait(), self.wake.wait())

    async def follow_events(self) -> None:
        """Wake the loop as soon as the provider reports a death. Should the stream fail, the
        loop still finds dead members every interval; the stream is followed again."""
        while True:
            try:
                async for gone in self.provider.events():
                    if any(m.id == gone.id for m in self.members) or gone.id in self.removing:
                        log.debug("%s: member %s: %s", self.pool, gone.id, gone.detail)
                        self.wake.set()
                return
            except Exception as exc:  # a broken stream must not end death notice for good
                log.warning(
                    "%s: provider events failed (%s); following again in 5s", self.pool, exc
                )
                await asyncio.sleep(5.0)

    async def follow_demand(self) -> None:
        """Wake the loop when lb reports that the pool's demand left 0 or jumped: one watcher
        per lb instance, and the pool's demand is their sum. Never acts: the loop, woken,
        decides. Failures back off and are logged once until it works."""
        await asyncio.gather(*(self._follow_demand(inst) for inst in self.fleet.instances))

    async def _follow_demand(self, inst: Instance) -> None:
        after: int | None = None
        backoff = 0.0
        failing = ""
        lb = self.fleet.lb(inst)
        while True:
            try:
                d = await inst.client.demand(self.pool, after=after, within=DEMAND_WAIT)
            except (ApiError, ControlClientError) as exc:
                inst.demand = None
                if isinstance(exc, ApiError) and exc.status == 404 and exc.field != "pool":
                    self._no_demand_api()
                    why = "no demand API"  # said once, by _no_demand_api
                elif isinstance(exc, ApiError):
                    why = f"{lb} refused the demand call: {exc.message}"
                else:
                    why = f"{lb} unreachable: {exc}"
                cap = DEMAND_BACKOFF[1] if isinstance(exc, Unreachable) else DEMAND_BACKOFF[2]
                backoff = min(cap, max(DEMAND_BACKOFF[0], backoff * 2))
                if why != failing and why != "no demand API":
                    failing = why
                    log.info(
                        "%s: %s; reacting every interval (%gs) instead, trying again",
                        self.pool,
                        why,
                        self.sc.interval,
                    )
                after = None  # a restarted lb counts again from 0: ask for the current values
                await asyncio.sleep(backoff)
                continue
            if failing or not self._demand_api:
                log.info("%s: following %s's demand again", self.pool, lb)
                failing, backoff, self._demand_api = "", 0.0, True
            after = d.seq
            inst.demand = (d.demand, d.eligible)
            self.on_demand(*self.fleet.demand_now())
            await asyncio.sleep(DEMAND_GAP)

    def on_demand(self, demand: int, eligible: int) -> None:
        """A demand figure from lb, between ticks: wake the loop at once if requests wait
        with nothing eligible to serve them (zero members), or soon if the demand jumped."""
        if self.policy is not None:
            self.policy.note_demand(self.clock(), demand)
        seen = self.demand or 0
        if demand > 0 and eligible == 0:
            # Logged when it is news (the last tick saw no demand); repeats are for debugging.
            self._wake_log(
                logging.INFO if not seen else logging.DEBUG,
                f"demand {demand} with no backend eligible: waking the loop now",
                cause="no_eligible",
                demand=demand,
            )
            self.wake.set()
        elif (
            self.sc.metric == "inflight_per_backend"
            and is_jump(seen, demand, self.sc.target)
            and (self._settle is None or self._settle.cancelled())
        ):
            self._wake_log(
                logging.INFO,
                f"demand jumped {seen} -> {demand}: waking the loop in {JUMP_SETTLE:g}s",
                cause="jump",
                demand=demand,
            )
            self._settle = asyncio.get_running_loop().call_later(JUMP_SETTLE, self._woken)

    def _wake_log(self, level: int, message: str, **fields: Any) -> None:
        log.log(
            level,
            "%s: %s",
            self.pool,
            message,
            extra={"event": {"event": "scaler_woken", "pool": self.pool, **fields}},
        )

    def _woken(self) -> None:
        self._settle = None
        self.wake.set()

    async def tick(self) -> None:
        try:
            members = await self.provider.list()
        except ProviderError as exc:
            self._note_error(f"cannot list members: {exc}")
            return
        live = [m for m in members if m.running]
        for m in members:
            if not m.running:
                await self._clean_dead(m)
        self.members = live
        if not await self._reconcile(live):
            return
        now = self.clock()
        pending = [m for m in live if m.id in self.removing]
        active = [m for m in live if m.id not in self.removing]
        if not await self._observe(active):
            return
        if self.policy is None:
            self.policy = Policy(spec_of(self.sc), now, len(active))
        cpu = await self._cpu_percent(active) if self.sc.metric == "cpu_percent" else {}
        rows = samples(self.sc.metric, active, self.stats, cpu, self._per_backend())
        d = self.policy.decide(now, len(active), rows, demand=self.demand)
        self._note_decision(d)
        victims = pick_victims(active, self.stats, -d.change) if d.change < 0 else []
        if pending or victims:
            removed = await self._remove_all(pending + victims)
            self.policy.record(self.clock(), -removed)
        if d.change > 0:
            added = await self._scale_up(d.change)
            self.policy.record(self.clock(), added)

    # -- observe and reconcile ------------------------------------------------------------------

    async def _reconcile(self, live: list[Member]) -> bool:
        """Make every lb that answers match the members: the resync of an instance that was
        away or restarted, and adoption after a scaler restart. False: no lb answers (or the
        only one refused the pool)."""
        fleet = self.fleet
        if not await fleet.views():
            return False
        by_address = {m.address: m for m in live}
        seen = [i for i in fleet.instances if i.known and i.reachable]
        changes: dict[str, list[str]] = {i.name: [] for i in seen}
        failed: set[str] = set()
        for address in sorted({a for i in seen for a in i.ours if a not in by_address}):
            where = [i for i in seen if address in i.ours]
            member = where[0].ours[address].metadata.get("member", "")
            got = await asyncio.gather(*(fleet.deregister(i, address, force=True) for i in where))
            done = [i for i, r in zip(where, got, strict=True) if r == "removed"]
            failed |= {i.name for i, r in zip(where, got, strict=True) if r == "failed"}
            for i in done:
                changes[i.name].append(f"deregistered {address}")
            if done:
                self.action(
                    "deregistered",
                    f"deregistered {address}{self._on(done)}: no live member serves it",
                    member=member,
                    address=address,
                )
        for m in live:
            missing = [i for i in seen if m.address not in i.ours]
            if not missing or m.id in self.removing:
                continue
            added = await self._register(m, missing)
            failed |= {i.name for i in missing if i not in added}
            for i in added:
                changes[i.name].append(f"registered {m.address}")
            if added:
                self.action(
                    "adopted",
                    f"registered {m.address} ({m.name}){self._on(added)}: running but not "
                    "registered",
                    member=m.id,
                    address=m.address,
                )
        for i in seen:
            if i.name not in failed:
                fleet.synced(i, changes[i.name])
        # Intents about members that no longer exist are done.
        gone = self.removing - {m.id for m in live}
        if gone:
            self.removing -= gone
            self.on_change()
        return True

    def _on(self, where: Sequence[Instance]) -> str:
        """`` on lb a, b`` when only some instances of several are meant; else ""."""
        if self.fleet.single or len(where) == len(self.fleet.instances):
            return ""
        return " on lb " + ", ".join(i.name for i in where)

    async def _register(self, m: Member, on: Sequence[Instance] | None = None) -> list[Instance]:
        """Register ``m`` on ``on`` (default: every lb instance); returns where it is now."""
        return await self.fleet.register(
            m.address,
            self.sc.weight,
            metadata={
                "managed-by": MANAGED_BY,
                "member": m.id[:256],
                "provider": self.sc.provider,
                # Where it runs (Swarm: node, task, slot), for the dashboard.
                **{k: m.info[k][:256] for k in ("node", "task", "slot") if m.info.get(k)},
            },
            what=f"{m.address} ({m.name})",
            on=on,
        )

    async def _observe(self, active: list[Member]) -> bool:
        try:
            got = await self.fleet.stats(self.sc.metric_window)
        except ApiError as exc:
            self._note_error(f"lb stats: {exc.message}")
            return False
        if got is None:
            return False
        self.stats, self.eligible, in_flight = got
        self.demand = await self._demand(in_flight)
        return True

    async def _demand(self, in_flight: int | None) -> int | None:
        """The pool's demand now (in flight + queued + held), summed over the lb instances.
        From an lb without the demand API: its in-flight count, which is the demand when
        nothing can wait in lb."""
        if self._demand_api:
            try:
                return await self.fleet.demand()
            except ApiError as exc:
                if exc.status == 404 and exc.field != "pool":
                    self._no_demand_api()
                else:
                    self._note_error(f"lb demand: {exc.message}")
            except ControlClientError:
                pass  # stats just answered: a blip; the in-flight count stands in
        return in_flight

    def _no_demand_api(self) -> None:
        if self._demand_api:
            self._demand_api = False
            log.warning(
                "%s: lb has no demand API (an older lb?): the demand is the pool's in-flight "
                "count, nothing waits for a member at zero, and the scaler reacts every "
                "interval (%gs); asking again from time to time",
                self.pool,
                self.sc.interval,
            )

    def _per_backend(self) -> float | None:
        """``inflight_per_backend`` from the pool's demand: a backend's in-flight count is
        capped by its ``max_conn`` while the rest waits in lb, so the count alone would hide
        the load. None: no demand figure, or nothing eligible to share it."""
        if self.sc.metric != "inflight_per_backend" or self.demand is None or not self.eligible:
            return None
        return self.demand / self.eligible

    async def _cpu_percent(self, members: list[Member]) -> dict[str, float | None]:
        got = await asyncio.gather(*(self.provider.cpu(m) for m in members))
        out: dict[str, float | None] = {}
        for m, sample in zip(members, got, strict=True):
            out[m.id] = cpu_percent(self._cpu.get(m.id), sample)
            if sample is not None:
                self._cpu[m.id] = sample
        for mid in set(self._cpu) - {m.id for m in members}:
            del self._cpu[mid]
        return out

    async def _clean_dead(self, m: Member) -> None:
        if m.id not in self._reported_dead and m.id not in self.removing:
            self._reported_dead.add(m.id)
            self.action(
                "died",
                f"member {m.name} at {m.address or '?'} is not running ({m.detail}); removing it",
                logging.WARNING,
                member=m.id,
                address=m.address,
                detail=m.detail,
            )
        try:
            await self.provider.stop_and_remove(m, 0.0)
        except ProviderError as exc:
            self._note_error(f"cannot clean up {m.name}: {exc}")
            return
        self._reported_dead.discard(m.id)

    def _note_error(self, message: str) -> None:
        if message != self.last_error:
            self.action("error", message, logging.ERROR)
        self.last_error = message

    # -- act ------------------------------------------------------------------------------------

    async def _scale_up(self, n: int) -> int:
        wait = self.retry_at - self.clock()
        if wait > 0:
            log.info(
                "%s: scale up by %d postponed %.1fs: backing off after %d failed start(s)",
                self.pool,
                n,
                wait,
                self.failures,
                extra={"event": {"event": "scaler_backoff", "pool": self.pool, "wait": wait}},
            )
            return 0
        results = await asyncio.gather(*(self._create_one() for _ in range(n)))
        created = sum(1 for r in results if r is None)
        errors = [r for r in results if r is not None]
        if errors:
            self.failures += 1
            delay = min(self.sc.backoff_max, self.sc.backoff * 2 ** (self.failures - 1))
            self.retry_at = self.clock() + delay
            self.action(
                "start_failed",
                f"{len(errors)} of {n} member(s) failed to start (cleaned up): {errors[0]}; "
                f"next attempt in {delay:g}s",
                logging.ERROR,
                failures=self.failures,
                backoff=delay,
            )
            self.last_error = errors[0]
        elif created:
            self.failures = 0
            self.retry_at = 0.0
        return created

    async def _create_one(self) -> str | None:
        """Create, start and register one member; None on success, else the error."""
        t0 = self.clock()
        try:
            m = await self.provider.create()
        except ProviderError as exc:
            return str(exc)
        registered = await self._register(m)
        self.action(
            "member_started",
            f"started {m.name} at {m.address} in {self.clock() - t0:.2f}s"
            + ("; registered (checking until its first health check passes)" if registered else ""),
            member=m.id,
            address=m.address,
            seconds=round(self.clock() - t0, 3),
        )
        self.members.append(m)
        return None

    async def _remove_all(self, victims: list[Member], *, drain: bool = True) -> int:
        for m in victims:
            self.removing.add(m.id)
        self.on_change()  # the intent is on disk before the first drain
        done = await asyncio.gather(*(self._remove(m, drain=drain) for m in victims))
        return sum(done)

    async def _remove(self, m: Member, *, drain: bool = True) -> bool:
        """Drain on every lb, wait, stop, remove, deregister everywhere. False (intent kept)
        if no lb can be asked, or one refused."""
        t0 = self.clock()
        timeout = self.sc.drain_timeout
        d = await self.fleet.drain(m.address, timeout, self.clock) if drain else Drained()
        if d.nobody:
            self._note_error(f"cannot drain {m.address} ({self.fleet.down}); will try again")
            return False
        if d.refused:
            self._note_error(f"cannot drain {m.address}: {d.refused}; will try again")
            return False
        if d.timeouts:
            self.action(
                "drain_timeout",
                f"{m.address} still had {'; '.join(d.timeouts)} after drain_timeout="
                f"{timeout:g}s; stopping it anyway",
                logging.WARNING,
                member=m.id,
                address=m.address,
            )
        if d.unreachable:
            names = ", ".join(f"lb {n} ({why})" for n, why in sorted(d.unreachable.items()))
            self.action(
                "drain_unreachable",
                f"{m.address}: {names} did not answer within drain_timeout={timeout:g}s; "
                "removing it anyway (it is deregistered there when that lb returns)",
                logging.WARNING,
                member=m.id,
                address=m.address,
            )
        try:
            await self.provider.stop_and_remove(m, self.sc.stop_timeout)
        except ProviderError as exc:
            self._note_error(f"cannot stop {m.name}: {exc}; will try again")
            return False
        if d.registered:
            # Not removable in time: its connections are closed (the member is gone).
            await self.fleet.deregister_all(m.address, lambda lb: not d.removable.get(lb, False))
        self.removing.discard(m.id)
        self.members = [x for x in self.members if x.id != m.id]
        self.fleet.forget(m.address)
        self.on_change()
        if not d.registered:
            how = "stopped; it was not registered"
        elif d.all_removable:
            how = "drained, stopped, deregistered"
        elif d.unreachable and all(d.removable.values()):
            how = "drained on every lb that answered, stopped, deregistered"
        else:
            how = "drained until drain_timeout, stopped, deregistered"
        self.action(
            "member_removed",
            f"removed {m.name} at {m.address} in {self.clock() - t0:.2f}s ({how})",
            member=m.id,
            address=m.address,
            seconds=round(self.clock() - t0, 3),
        )
        return True

    async def stop_all(self) -> int:
        """Drain, stop and deregister every member (``lb-scaler stop-all``). Without lb the
        members are only stopped; a later scaler deregisters what they leave registered."""
        members = await self.provider.list()
        for m in members:
            if not m.running:
                await self._clean_dead(m)
        live = [m for m in members if m.running]
        self.members = live
        if not await self.fleet.views():
            log.warning(
                "%s: lb unreachable (%s): stopping members without draining them",
                self.pool,
                self.fleet.down or self.last_error,
            )
            return await self._remove_all(live, drain=False)
        live_addresses = {m.address for m in live}
        for inst in self.fleet.instances:
            for address in [a for a in inst.ours if a not in live_addresses]:
                await self.fleet.deregister(inst, address, force=True)
        return await self._remove_all(live)

    # -- status ---------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        d = self.last
        members = []
        for m in sorted(self.members, key=lambda x: x.created):
            st = self.stats.get(m.address)
            members.append(
                {
                    "id": m.id,
                    "name": m.name,
                    "address": m.address,
                    "created": m.created,
                    "registered": bool(self.fleet.registered(m.address)),
                    "lbs": self.fleet.registered(m.address),
                    "admin": st.admin.value if st is not None else None,
                    "health": st.health.value if st is not None else None,
                    "in_flight": st.in_flight if st is not None else None,
                    "removing": m.id in self.removing,
                    **m.info,
                }
            )
        return {
            "pool": self.pool,
            "provider": self.sc.provider,
            "settings": self.sc.settings_text(),
            "min": self.sc.min,
            "max": self.sc.max,
            "metric": self.sc.metric,
            "target": self.sc.target,
            "interval": self.sc.interval,
            "current": len([m for m in self.members if m.id not in self.removing]),
            "desired": d.desired if d is not None else None,
            "reason": d.reason if d is not None else "",
            "demand": self.demand,
            "panic": d.panic if d is not None else False,
            "removing": sorted(self.removing),
            "failures": self.failures,
            "last_error": self.last_error,
            "lb_unreachable": self.fleet.down,
            "lbs": self.fleet.status(),
            "counts": dict(self.counts),
            "members": members,
            "decisions": list(self.decisions),
            "actions": list(self.actions),
        }


async def _first(*aws: Awaitable[Any]) -> None:
    """Until the first of ``aws`` completes; the others are cancelled."""
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

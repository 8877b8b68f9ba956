"""The supervisor's health department: active checks, passive ejection, slow start, panic notes.

Owns: the ``ActiveChecker``, the ``OutlierDetector``, readmission timers, slow-start ramps and
the log lines about pools in panic. Never does: write a backend's state except through
``ClusterState`` (whose ``on_change`` hook tells the workers), or run in a worker.

Theory of operation
-------------------
The supervisor creates one ``HealthManager``, calls ``start`` before it starts the workers and
``wait_initial`` before it announces that it runs, so that the first checks have decided who
is ``up`` by then. Its change hooks forward ``backend_changed``/``backend_removed`` here, and
its bus handler forwards the workers' ``failure`` and ``success`` events.

* **Passive ejection.** ``on_failure`` asks the detector; an ejection sets ``ejected_until``
  through ``ClusterState.eject`` (the workers receive ``ejected: true``), and a
  ``loop.call_at`` at the deadline readmits the backend through ``ClusterState.readmit``,
  which sends ``ejected: false``: the flag is computed when it is sent, so it must be sent
  again when it changes by itself.
* **Slow start.** A backend ramps when the manager sees it come ``up``: back from ``down``,
  or added at runtime (its first passing check, or at once in a pool without checks).
  ``ClusterState.set_health`` already lowers its effective weight to the floor; every
  ``TICK`` seconds the ramp raises it through ``ClusterState.set_effective_weight`` until it
  reaches the configured weight. Backends present when lb starts do not ramp on their first
  check (nor at all without checks): they were serving before; only a restart of lb is new.
* **Housekeeping.** Every ``TICK`` the checker's tasks are reconciled with the state (a
  reload may add or drop health sections) and pools are checked for panic (nothing
  eligible), which is logged once on entry and once on exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from lb.config import PassiveConfig
from lb.health.checker import ActiveChecker
from lb.health.passive import Ejection, EjectionPolicy, OutlierDetector, Refusal
from lb.health_rules import format_seconds, ramping, slow_start_weight
from lb.model import AdminState, HealthState
from lb.state import ClusterState, ManagedBackend, StateError
from lb.wire import Failure, Success

log = logging.getLogger("lb.health")

TICK = 0.5  # seconds between slow-start steps and housekeeping passes
INITIAL_SLACK = 1.0  # how much longer than one check wait_initial waits for the first results


def policy_of(passive: PassiveConfig) -> EjectionPolicy:
    return EjectionPolicy(
        consecutive_failures=passive.consecutive_failures,
        ejection_time=passive.ejection_time,
        max_ejection_time=passive.max_ejection_time,
        max_ejection_percent=passive.max_ejection_percent,
        on_5xx=passive.on_5xx,
    )


class HealthManager:
    def __init__(self, state: ClusterState, loop: asyncio.AbstractEventLoop) -> None:
        self.state = state
        self.loop = loop
        self.checker = ActiveChecker(state, loop)
        self.detector = OutlierDetector()
        self.ramps: dict[tuple[str, str], float] = {}  # backend -> when its ramp started
        self._known: dict[tuple[str, str], HealthState] = {}
        self._boot: set[tuple[str, str]] = set()  # present at start, first check still due
        self._readmit_timers: dict[tuple[str, str], asyncio.TimerHandle] = {}
        self._refusal_logged: set[tuple[str, str]] = set()
        self._panicking: set[str] = set()
        self._tick_task: asyncio.Task[None] | None = None
        self._decided: asyncio.Event | None = None  # set while wait_initial waits
        self.started = False

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        for b in self.state.all_backends():
            self._known[(b.pool, b.id)] = b.health
            if b.health is HealthState.CHECKING:
                self._boot.add((b.pool, b.id))
        self.started = True
        self.checker.sync()
        self._tick_task = self.loop.create_task(self._tick(), name="health housekeeping")

    async def wait_initial(self) -> None:
        """Until every checked backend has its first result, or about one check too long."""
        limit = 0.0
        for cfg in self.state.config.pools.values():
            if cfg.health is not None:
                first = cfg.health.jitter * cfg.health.fast_interval + cfg.health.timeout
                limit = max(limit, first + INITIAL_SLACK)
        if not self._undecided():
            return
        self._decided = asyncio.Event()
        try:
            async with asyncio.timeout(limit):
                await self._decided.wait()
        except TimeoutError:
            pass  # a check that hangs must not hold up the start; it decides later
        finally:
            self._decided = None

    def _undecided(self) -> bool:
        return any(b.health is HealthState.CHECKING for b in self.state.all_backends())

    async def stop(self) -> None:
        self.started = False
        if self._tick_task is not None:
            self._tick_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._tick_task
            self._tick_task = None
        for handle in self._readmit_timers.values():
            handle.cancel()
        self._readmit_timers.clear()
        await self.checker.stop()

    # -- change hooks (called by the supervisor's ClusterState hooks) -----------------------

    def backend_changed(self, pool: str, b: ManagedBackend) -> None:
        if not self.started:
            return
        key = (pool, b.id)
        before = self._known.get(key)
        self._known[key] = b.health
        booting = key in self._boot
        if b.health is not HealthState.CHECKING:
            self._boot.discard(key)
        if before is None:
            self.checker.ensure(pool, b.id)
        if b.health is HealthState.UP and before is not HealthState.UP:
            if booting:
                # Up at its first check after lb started: it was serving before, not coming
                # up. Undo the floor ``set_health`` applied (a no-op without slow start).
                self.state.set_effective_weight(pool, b.id, b.weight)
            else:
                self._start_ramp(pool, b)
        elif b.health is not HealthState.UP:
            self.ramps.pop(key, None)
        self._note_panic(pool)
        if self._decided is not None and not self._undecided():
            self._decided.set()

    def backend_removed(self, pool: str, backend_id: str) -> None:
        key = (pool, backend_id)
        self._known.pop(key, None)
        self._boot.discard(key)
        self.checker.cancel(pool, backend_id)
        self.detector.forget(key)
        self.ramps.pop(key, None)
        self._refusal_logged.discard(key)
        handle = self._readmit_timers.pop(key, None)
        if handle is not None:
            handle.cancel()
        if self.started:
            self._note_panic(pool)
        if self._decided is not None and not self._undecided():
            self._decided.set()

    # -- passive health (events from the workers) -------------------------------------------

    def on_failure(self, msg: Failure) -> None:
        pool, bid, kind, error = msg.pool, msg.id, msg.kind, msg.error
        try:
            b = self.state.backend(pool, bid)
        except StateError:
            return  # removed since
        log.debug("%s: %s failure reported by worker %s: %s", b.name, kind, msg.worker, error)
        cfg = self.state.config.pools.get(pool)
        if cfg is None or cfg.passive is None:
            return
        now = self.loop.time()
        backends = self.state.pools[pool]
        key = (pool, b.id)
        decision = self.detector.failure(
            key,
            policy_of(cfg.passive),
            now,
            kind=kind,
            error=error,
            eligible_for_ejection=(
                b.health is HealthState.UP
                and not b.ejected(now)
                and key not in self._readmit_timers  # stragglers of the last ejection
            ),
            ejected_until=b.ejected_until,
            ejections=b.ejections,
            pool_size=len(backends),
            ejected_in_pool=sum(
                # As the workers see it: until its readmission is sent, a backend is ejected
                # even if its deadline just passed. So the cap holds in the data plane too.
                1
                for x in backends.values()
                if x.ejected(now) or (pool, x.id) in self._readmit_timers
            ),
        )
        if isinstance(decision, Ejection):
            self._refusal_logged.discard(key)
            self.state.eject(pool, b.id, decision.until, decision.ejections, decision.cause, now)
            old = self._readmit_timers.pop(key, None)
            if old is not None:
                old.cancel()
            self._readmit_timers[key] = self.loop.call_at(
                decision.until, self._readmit, pool, b.id, decision.until, decision.duration
            )
        elif isinstance(decision, Refusal) and key not in self._refusal_logged:
            self._refusal_logged.add(key)
            log.warning(
                "%s not ejected: %s",
                b.name,
                decision.cause,
                extra={
                    "event": {
                        "event": "ejection_refused",
                        "pool": pool,
                        "backend": b.address,
                        "cause": decision.cause,
                    }
                },
            )

    def on_success(self, msg: Success) -> None:
        key = (msg.pool, msg.id)
        self.detector.success(key)
        self._refusal_logged.discard(key)

    def _readmit(self, pool: str, backend_id: str, until: float, duration: float) -> None:
        key = (pool, backend_id)
        self._readmit_timers.pop(key, None)
        backends = self.state.pools.get(pool)
        b = backends.get(backend_id) if backends is not None else None
        if b is None or b.ejected_until != until:
            return  # removed, or ejected again or readmitted by someone else meanwhile
        self.state.readmit(
            pool, backend_id, f"ejection of {format_seconds(duration)} ended", self.loop.time()
        )

    # -- slow start -------------------------------------------------------------------------

    def _start_ramp(self, pool: str, b: ManagedBackend) -> None:
        cfg = self.state.config.pools.get(pool)
        if cfg is None or cfg.slow_start <= 0:
            return
        now = self.loop.time()
        self.ramps[(pool, b.id)] = now
        # ``set_health`` lowered it already; a backend added ``up`` arrives at full weight.
        self.state.set_effective_weight(
            pool, b.id, slow_start_weight(b.weight, 0.0, cfg.slow_start)
        )

    def step_ramps(self, now: float) -> None:
        for key, since in list(self.ramps.items()):
            pool, bid = key
            cfg = self.state.config.pools.get(pool)
            backends = self.state.pools.get(pool)
            b = backends.get(bid) if backends is not None else None
            if cfg is None or b is None or b.health is not HealthState.UP:
                self.ramps.pop(key, None)
                continue
            elapsed = now - since
            if not ramping(elapsed, cfg.slow_start):
                del self.ramps[key]  # this last step sets the full weight
            self.state.set_effective_weight(
                pool, bid, slow_start_weight(b.weight, elapsed, cfg.slow_start)
            )

    # -- housekeeping -----------------------------------------------------------------------

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(TICK)
            try:
                self.checker.sync()
                self.step_ramps(self.loop.time())
                for pool in list(self.state.pools):
                    self._note_panic(pool)
            except Exception:
                log.exception("health housekeeping failed; retrying in %.1fs", TICK)

    def _note_panic(self, pool: str) -> None:
        """Log once when a pool has nothing eligible (panic), and once when that ends."""
        backends = self.state.pools.get(pool)
        cfg = self.state.config.pools.get(pool)
        if not backends or cfg is None:
            self._panicking.discard(pool)
            return
        now = self.loop.time()
        eligible = sum(
            1
            for b in backends.values()
            if b.admin is AdminState.READY
            and b.health is HealthState.UP
            and not b.ejected(now)
            and b.effective_weight > 0
        )
        if eligible == 0 and pool not in self._panicking:
            if any(b.health is HealthState.CHECKING for b in backends.values()):
                return  # a first check is due within one check: wait for it to decide
            self._panicking.add(pool)
            if cfg.panic == "route_all":
                ready = sum(
                    1 for b in backends.values() if b.admin is AdminState.READY and b.weight > 0
                )
                what = f"routing to all {ready} ready backend(s) whatever their health"
            else:
                what = "refusing new connections and requests (HTTP 503)"
            log.warning(
                "pool %s: no eligible backend; panic (%s): %s",
                pool,
                cfg.panic,
                what,
                extra={"event": {"event": "panic", "pool": pool, "panic": cfg.panic}},
            )
        elif eligible and pool in self._panicking:
            self._panicking.discard(pool)
            log.info(
                "pool %s: %d eligible backend(s) again; panic over",
                pool,
                eligible,
                extra={"event": {"event": "panic_over", "pool": pool}},
            )

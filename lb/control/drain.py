"""Draining: when a backend may be removed, and closing what is left after ``drain_timeout``.

Theory of operation
-------------------
A backend in admin ``drain`` or ``maint`` gets no new connections or requests (strategies only
pick ``ready`` backends). It is **removable** when, in every live worker, it has nothing
active. Worker counts arrive in stats snapshots, and a snapshot only proves something if the
worker took it *after* it applied the drain: every supervisor-to-worker message carries a
sequence number, every snapshot carries the highest one the worker had applied, and the drain
remembers the sequence number of the message that started it. A snapshot older than that is
"pending" and counts as not yet known, never as zero.

Workers make waiting prompt: they send a snapshot at once when they apply a drain, and when a
draining backend's last connection closes (``lb/worker.py``). When ``drain_timeout`` (per
pool) expires the supervisor tells every worker to close the backend's remaining
connections (``wire.CloseBackend``); the next snapshots then show it removable.

``removability`` is a pure function of the backend, the drain and the worker snapshots.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from lb.model import AdminState
from lb.state import ManagedBackend
from lb.wire import Stats

log = logging.getLogger("lb.drain")

Key = tuple[str, str]


@dataclass
class Drain:
    seq: int  # sequence number of the message that told the workers
    started: float
    timer: asyncio.TimerHandle | None = None
    closed: bool = False  # drain_timeout expired and the workers were told to close
    backend: ManagedBackend | None = None
    drained: bool = False  # its completion was logged (once)


@dataclass(frozen=True)
class Removability:
    removable: bool
    active: int  # sum over the workers whose snapshot is recent enough
    workers: int  # live workers
    pending: int  # live workers whose latest snapshot predates the drain
    reason: str


@dataclass
class _Waiter:
    key: Key
    fut: asyncio.Future[None] = field(repr=False)


def removability(
    b: ManagedBackend, drain: Drain | None, snapshots: Iterable[Stats]
) -> Removability:
    """``snapshots``: the latest stats of every live worker (an empty one if none yet)."""
    if b.admin is AdminState.READY or drain is None:
        return Removability(False, 0, 0, 0, "admin is ready: drain it first")
    active = workers = pending = 0
    for snap in snapshots:
        workers += 1
        if snap.seq < drain.seq:
            pending += 1
            continue
        counters = snap.pools.get(b.pool, {}).get(b.id)
        if counters:
            active += counters.get("active", 0)
    if pending:
        return Removability(
            False, active, workers, pending, f"waiting for {pending} worker(s) to report"
        )
    if active:
        return Removability(False, active, workers, 0, f"{active} active connection(s)")
    return Removability(True, 0, workers, 0, "nothing active in any worker")


class DrainTracker:
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        snapshots: Callable[[], list[Stats]],
        drain_timeout: Callable[[str], float],
        close_backend: Callable[[str, str], None],
    ) -> None:
        self.loop = loop
        self._snapshots = snapshots
        self._drain_timeout = drain_timeout
        self._close_backend = close_backend
        self.drains: dict[Key, Drain] = {}
        self._waiters: list[_Waiter] = []
        self.closed = False  # shutting down: waits answer at once

    # -- hooks from the supervisor ------------------------------------------------------------

    def backend_changed(self, pool: str, b: ManagedBackend, seq: int) -> None:
        key = (pool, b.id)
        if b.admin is AdminState.READY:
            d = self.drains.pop(key, None)
            if d is not None:
                if d.timer is not None:
                    d.timer.cancel()
                self._wake(key)
        elif key not in self.drains:
            d = Drain(seq=seq, started=self.loop.time(), backend=b)
            d.timer = self.loop.call_later(self._drain_timeout(pool), self._expire, pool, b.id, d)
            self.drains[key] = d
            self._wake(key)

    def backend_removed(self, pool: str, backend_id: str) -> None:
        d = self.drains.pop((pool, backend_id), None)
        if d is not None and d.timer is not None:
            d.timer.cancel()
        self._wake((pool, backend_id))

    def stats_updated(self) -> None:
        for w in self._waiters:
            if not w.fut.done():
                w.fut.set_result(None)
        if any(not d.drained for d in self.drains.values()):
            self._note_drained()

    def _note_drained(self) -> None:
        """One log line when a drain completes: nothing active in any worker."""
        snaps = self._snapshots()
        for (pool, backend_id), d in self.drains.items():
            b = d.backend
            if d.drained or b is None or not removability(b, d, snaps).removable:
                continue
            d.drained = True
            took = self.loop.time() - d.started
            log.info(
                "%s/%s drained in %.1fs%s: nothing active in any worker; removable",
                pool,
                backend_id,
                took,
                " (connections closed at drain_timeout)" if d.closed else "",
                extra={
                    "event": {
                        "event": "drained",
                        "pool": pool,
                        "backend": b.address,
                        "seconds": round(took, 3),
                        "forced": d.closed,
                    }
                },
            )

    def close(self) -> None:
        self.closed = True
        for d in self.drains.values():
            if d.timer is not None:
                d.timer.cancel()
        self.stats_updated()

    # -- queries --------------------------------------------------------------------------------

    def status(self, b: ManagedBackend, snapshots: list[Stats] | None = None) -> Removability:
        snaps = self._snapshots() if snapshots is None else snapshots
        return removability(b, self.drains.get((b.pool, b.id)), snaps)

    async def wait(
        self, lookup: Callable[[], ManagedBackend], seconds: float, *, applied: bool = False
    ) -> Removability:
        """Wait until the backend returned by ``lookup`` is removable, or ``seconds`` pass.
        With ``applied``, only until every live worker has applied the drain (it takes no new
        traffic anywhere), which is what the API waits for before it acknowledges a drain.

        ``lookup`` raises (StateError 404) when the backend is removed meanwhile. Returns the
        last status: check ``removable``.
        """
        deadline = self.loop.time() + seconds
        while True:
            b = lookup()
            st = self.status(b)
            done = st.removable or (applied and st.pending == 0)
            if done or b.admin is AdminState.READY or self.closed:
                return st
            left = deadline - self.loop.time()
            if left <= 0:
                return st
            w = _Waiter((b.pool, b.id), self.loop.create_future())
            self._waiters.append(w)
            try:
                async with asyncio.timeout(left):
                    await w.fut
            except TimeoutError:
                pass
            finally:
                self._waiters.remove(w)

    def _wake(self, key: Key) -> None:
        for w in self._waiters:
            if w.key == key and not w.fut.done():
                w.fut.set_result(None)

    def _expire(self, pool: str, backend_id: str, d: Drain) -> None:
        if self.drains.get((pool, backend_id)) is not d:
            return
        d.closed = True
        log.info(
            "%s/%s: drain_timeout expired; closing its remaining connections",
            pool,
            backend_id,
            extra={"event": {"event": "drain_timeout", "pool": pool, "backend": backend_id}},
        )
        self._close_backend(pool, backend_id)

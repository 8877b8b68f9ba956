"""Pool demand as it happens: in flight + queued + held, summed over the live workers, with a
sequence number per pool and a long poll (``GET /v1/pools/{pool}/demand``) for the scaler.

Workers send ``wire.Demand`` at once when a pool's demand rises above twice what they last
reported, so when it leaves zero (``PoolRuntime._report_demand``), and their stats snapshot
every second carries the same figures: falls are seen within a second. A pool's ``seq`` moves
when its total changes; a long poll with ``after = seq`` answers at the next change, or at its
timeout with the unchanged figures. A dead worker's figures stop counting at once (its
requests died with it); its replacement reports its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

Figures = tuple[int, int, int]  # (in_flight, queued, held)
_ZERO: Figures = (0, 0, 0)


@dataclass(frozen=True, slots=True)
class PoolDemandFigures:
    seq: int
    in_flight: int
    queued: int
    held: int

    @property
    def demand(self) -> int:
        return self.in_flight + self.queued + self.held


class DemandBoard:
    def __init__(self, live_workers: Callable[[], Iterable[int]]) -> None:
        self._live = live_workers
        self._by_worker: dict[int, dict[str, Figures]] = {}
        self._totals: dict[str, Figures] = {}
        self._seq: dict[str, int] = {}
        self._changed = asyncio.Event()

    def update(self, worker: int, pools: Mapping[str, tuple[int, ...]]) -> None:
        """A worker's figures for some pools (a Demand message, or its stats snapshot)."""
        mine = self._by_worker.setdefault(worker, {})
        for name, values in pools.items():
            mine[name] = (values[0], values[1], values[2]) if len(values) >= 3 else _ZERO
        self._recount(pools.keys())

    def _recount(self, names: Iterable[str]) -> None:
        live = set(self._live())
        changed = False
        for name in names:
            total = _ZERO
            for worker, pools in self._by_worker.items():
                if worker in live:
                    f = pools.get(name, _ZERO)
                    total = (total[0] + f[0], total[1] + f[1], total[2] + f[2])
            if self._totals.get(name, _ZERO) != total:
                self._totals[name] = total
                self._seq[name] = self._seq.get(name, 0) + 1
                changed = True
        if changed:
            self._changed.set()
            self._changed = asyncio.Event()

    def forget(self, worker: int) -> None:
        """A worker died: its requests died with it."""
        gone = self._by_worker.pop(worker, None)
        if gone:
            self._recount(gone.keys())

    def get(self, pool: str) -> PoolDemandFigures:
        f = self._totals.get(pool, _ZERO)
        return PoolDemandFigures(self._seq.get(pool, 0), f[0], f[1], f[2])

    async def wait(self, pool: str, after: int | None, within: float) -> PoolDemandFigures:
        """The pool's figures once its seq is past ``after`` (at once when ``after`` is None
        or already past), or when ``within`` seconds have gone by."""
        if after is None:
            return self.get(pool)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while self._seq.get(pool, 0) <= after:
            left = deadline - loop.time()
            if left <= 0:
                break
            try:
                async with asyncio.timeout(left):
                    await self._changed.wait()
            except TimeoutError:
                break
        return self.get(pool)

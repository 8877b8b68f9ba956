"""Least connections, weighted: the backend with the smallest ``active / effective_weight``.

Owns: the tie-break rotation. Never does: I/O, or keep its own connection counts: ``active``
is maintained by the proxy and read at pick time, so no callbacks are needed.

Ties are broken round-robin: the scan for the minimum starts just after the backend picked
last time, so backends with equal load take turns (an idle pool is served in rotation).

pick() is O(n): it computes every load (in C, via ``map``) and takes the first minimum from
the rotating start. A flat-cost version needs the proxy to report changes of ``active``
(acquire/release callbacks) so that loads can be kept in buckets or a heap, as HAProxy does
with its ebtree keyed by ``(conns + 1) / weight``.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence

from lb.balancing.options import StrategyOptions
from lb.model import Backend

_active = operator.attrgetter("active")
_div = operator.truediv


class LeastConn:
    """Minimum ``active / effective_weight``; equal loads take turns."""

    __slots__ = ("_backends", "_next", "_weights")

    def __init__(self, options: StrategyOptions) -> None:
        self._backends: tuple[Backend, ...] = ()
        self._weights: tuple[float, ...] = ()
        self._next = 0

    def update(self, backends: Sequence[Backend]) -> None:
        self._backends = tuple(b for b in backends if b.eligible)
        self._weights = tuple(b.effective_weight for b in self._backends)
        n = len(self._backends)
        self._next = self._next % n if n else 0

    def pick(self, key: bytes | None) -> Backend | None:
        backends = self._backends
        n = len(backends)
        if n <= 1:
            return backends[0] if n else None
        loads = list(map(_div, map(_active, backends), self._weights))
        least = min(loads)
        start = self._next
        try:
            i = loads.index(least, start)
        except ValueError:
            i = loads.index(least, 0, start)
        self._next = i + 1 if i + 1 < n else 0
        return backends[i]

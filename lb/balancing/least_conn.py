"""Least connections, weighted: the backend with the smallest ``active / effective_weight``.

Owns: the tie-break rotation. Never does: I/O, or keep its own connection counts: ``active``
is maintained by the proxy and read at pick time, so no callbacks are needed.

Ties are broken round-robin: the scan for the minimum starts just after the backend picked
last time, so backends with equal load take turns (an idle pool is served in rotation).

pick() is O(n): it reads every ``active`` (a list comprehension, then ``min`` and
``list.index`` in C). When all weights are equal, which is the common case, it compares the
integer counts directly and skips the float divisions, which are most of the cost. A
flat-cost version needs the proxy to report changes of ``active`` (acquire/release
callbacks), so that backends can be kept in buckets by load or in a heap, as HAProxy does with
its ebtree keyed by ``(conns + 1) / weight``.
"""

from __future__ import annotations

from collections.abc import Sequence

from lb.balancing.options import StrategyOptions
from lb.model import Backend


class LeastConn:
    """Minimum ``active / effective_weight``; equal loads take turns."""

    needs_key = False  # ignores the hash key

    __slots__ = ("_backends", "_next", "_weights")

    def __init__(self, options: StrategyOptions) -> None:
        self._backends: tuple[Backend, ...] = ()
        # None when all weights are equal: then ``active`` alone orders the backends.
        self._weights: tuple[float, ...] | None = None
        self._next = 0

    def update(self, backends: Sequence[Backend]) -> None:
        eligible = tuple(b for b in backends if b.eligible)
        weights = tuple(b.effective_weight for b in eligible)
        self._backends = eligible
        self._weights = weights if len(set(weights)) > 1 else None
        n = len(eligible)
        self._next = self._next % n if n else 0

    def pick(self, key: bytes | None) -> Backend | None:
        backends = self._backends
        n = len(backends)
        if n <= 1:
            return backends[0] if n else None
        weights = self._weights
        if weights is None:
            loads: list[float] = [b.active for b in backends]
        else:
            loads = [b.active / w for b, w in zip(backends, weights, strict=False)]
        least = min(loads)
        start = self._next
        try:
            i = loads.index(least, start)
        except ValueError:
            i = loads.index(least, 0, start)
        self._next = i + 1 if i + 1 < n else 0
        return backends[i]

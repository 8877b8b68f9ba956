"""Smooth weighted round-robin, exactly as nginx does it (``ngx_http_upstream_get_peer``).

Owns: the per-backend ``current`` weights. Never does: I/O or reading ``active``.

Theory of operation
-------------------
Every pick adds each eligible backend's ``effective_weight`` to its ``current`` weight, picks
the backend with the largest ``current`` (the first one on a tie, as nginx does) and
subtracts the total weight ``W`` from it. Written with deficits, the pick at step ``t + 1``
goes to the backend with the largest ``(t + 1) * w_i / W - picks_i(t)``: the one furthest
behind its fair share. Two properties follow (the unit tests prove and check them):

* a backend never gets ahead of its share by a whole pick, so over ``W`` picks with integer
  weights each backend gets exactly ``w_i`` picks and the state returns to all zeros;
* a run of ``k`` consecutive picks of backend ``i`` right after a pick of ``j`` satisfies
  ``k * (W - w_i + w_j) <= 2 * W``: heavy backends are spread out instead of sent in bursts.

Weights are floats (slow start lowers ``effective_weight`` gradually); the algorithm only
adds, subtracts and compares, so fractional weights need no special case. ``update`` keeps
each surviving backend's ``current`` weight (by ``Backend.id``, since workers may receive
fresh copies) and re-centres the values so they sum to zero again; that also removes any
floating-point drift, and means a weight change does not restart the sequence.

pick() is O(n) like nginx's, but the three passes (add, max, index) run in C.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence

from lb.balancing.options import StrategyOptions
from lb.model import Backend

_add = operator.add


class WeightedRoundRobin:
    """nginx's smooth weighted round-robin over ``effective_weight``."""

    needs_key = False  # ignores the hash key

    __slots__ = ("_backends", "_current", "_total", "_weights")

    def __init__(self, options: StrategyOptions) -> None:
        self._backends: tuple[Backend, ...] = ()
        self._weights: tuple[float, ...] = ()
        self._current: list[float] = []
        self._total = 0.0

    def update(self, backends: Sequence[Backend]) -> None:
        eligible = tuple(b for b in backends if b.eligible)
        previous = {b.id: c for b, c in zip(self._backends, self._current, strict=True)}
        current = [previous.get(b.id, 0.0) for b in eligible]
        if current:
            mean = sum(current) / len(current)
            current = [c - mean for c in current]
        self._backends = eligible
        self._weights = tuple(b.effective_weight for b in eligible)
        self._current = current
        self._total = sum(self._weights)

    def pick(self, key: bytes | None) -> Backend | None:
        current = self._current
        if not current:
            return None
        current[:] = map(_add, current, self._weights)
        best = max(current)
        # list.index finds the first maximum: nginx's tie-break (strictly greater replaces).
        i = current.index(best)
        current[i] = best - self._total
        return self._backends[i]

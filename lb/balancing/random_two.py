"""Power of two choices: sample two distinct eligible backends, keep the less loaded one.

Owns: nothing but the sampling. Never does: I/O, or keep its own counts (``active`` is read at
pick time). Load is ``active / effective_weight``, compared by cross-multiplying so that pick
does no division. On a tie the heavier backend wins, so an idle pool still leans towards the
bigger servers. Uses ``random.random``: cheap, and it need not be reproducible.

pick() is O(1). Compiled (``random_two.pxd``): the pick's arithmetic and the two backends'
``active`` are C.
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence
from random import random

from lb.balancing.options import StrategyOptions
from lb.balancing.roster import Roster
from lb.model import Backend


class RandomTwo:
    """Two random candidates, the one with the smaller ``active / effective_weight`` wins."""

    needs_key = False  # ignores the hash key

    __slots__ = ("_backends", "_n", "_roster", "_weights")

    def __init__(self, options: StrategyOptions) -> None:
        self._roster = Roster()
        self._backends: tuple[Backend, ...] = ()
        # Contiguous doubles, not 10,000 float objects scattered in memory: at 10,000
        # backends a pick's cost is its cache misses.
        self._weights = array("d")
        self._n = 0

    def update(self, backends: Sequence[Backend]) -> None:
        roster = self._roster
        if not roster.diff(backends):
            return
        # The two dicts hold the same ids in the same order.
        self._backends = tuple(roster.members.values())
        self._weights = array("d", roster.weights.values())
        self._n = len(self._backends)

    def pick(self, key: bytes | None) -> Backend | None:
        n = self._n
        if n <= 1:
            return self._backends[0] if n else None
        r = random()
        s = random()
        i = int(r * n)
        j = int(s * (n - 1))
        if j >= i:
            j += 1  # two distinct indices, each uniform
        a = self._backends[i]
        b = self._backends[j]
        wa = self._weights[i]
        wb = self._weights[j]
        # a.active / wa <= b.active / wb, without dividing (weights are > 0).
        load_a = a.active * wb
        load_b = b.active * wa
        if load_a < load_b or (load_a == load_b and wa >= wb):
            return a
        return b

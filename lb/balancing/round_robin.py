"""Plain round-robin over the eligible backends.

Owns: the rotation order. Never does: I/O, weights, or reading ``active``.

``update`` keeps the rotation going when the eligible set is unchanged (a weight-only change
must not make a backend's turn come twice in a row). When the set changes, the new rotation
starts at a random offset so that N workers which receive the same update at the same moment
do not all send their next request to the same backend.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator, Sequence

from lb.balancing.options import StrategyOptions
from lb.model import Backend


class RoundRobin:
    """Each eligible backend in turn; weights are ignored (use ``weighted`` for that)."""

    needs_key = False  # ignores the hash key

    __slots__ = ("_backends", "_cycle")

    def __init__(self, options: StrategyOptions) -> None:
        self._backends: tuple[Backend, ...] = ()
        self._cycle: Iterator[Backend] = iter(())

    def update(self, backends: Sequence[Backend]) -> None:
        eligible = tuple(b for b in backends if b.eligible)
        if _same_members(eligible, self._backends):
            return
        self._backends = eligible
        start = random.randrange(len(eligible)) if eligible else 0
        self._cycle = itertools.cycle(eligible[start:] + eligible[:start])

    def pick(self, key: bytes | None) -> Backend | None:
        # itertools.cycle does the index arithmetic in C; an empty cycle yields the default.
        return next(self._cycle, None)


def _same_members(a: tuple[Backend, ...], b: tuple[Backend, ...]) -> bool:
    return len(a) == len(b) and all(x is y for x, y in zip(a, b, strict=True))

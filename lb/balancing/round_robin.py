"""Plain round-robin over the eligible backends.

Owns: the rotation order. Never does: I/O, weights, or reading ``active``.

``update`` keeps the rotation going when the eligible set is unchanged (a weight-only change
must not make a backend's turn come twice in a row). When the set changes, the new rotation
starts at a random offset so that N workers which receive the same update at the same moment
do not all send their next request to the same backend. What changed comes from a ``Roster``
(compared in C), so an update that changes nothing here costs no pass in Python over the
pool; the rotation follows the order in which backends became eligible.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator, Sequence

from lb.balancing.options import StrategyOptions
from lb.balancing.roster import Roster
from lb.model import Backend


class RoundRobin:
    """Each eligible backend in turn; weights are ignored (use ``weighted`` for that)."""

    needs_key = False  # ignores the hash key

    __slots__ = ("_backends", "_cycle", "_roster")

    def __init__(self, options: StrategyOptions) -> None:
        self._roster = Roster()
        self._backends: tuple[Backend, ...] = ()
        self._cycle: Iterator[Backend] = iter(())

    def update(self, backends: Sequence[Backend]) -> None:
        changes = self._roster.diff(backends)
        if not (
            changes.joined
            or changes.left
            or changes.reordered
            or any(old is not new for old, new in changes.changed)
        ):
            return  # the same members: weights do not matter here
        eligible = tuple(self._roster.members.values())
        self._backends = eligible
        start = random.randrange(len(eligible)) if eligible else 0
        self._cycle = itertools.cycle(eligible[start:] + eligible[:start])

    def pick(self, key: bytes | None) -> Backend | None:
        # itertools.cycle does the index arithmetic in C; an empty cycle yields the default.
        return next(self._cycle, None)

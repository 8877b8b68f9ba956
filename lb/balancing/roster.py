"""What changed in a pool's eligible backends since a strategy's last ``update``.

Owns: the eligible backends a strategy holds (by ``Backend.id``, with the object and the
``effective_weight`` it last saw) and an order rank for every backend of the pool. Never does:
I/O, or read ``active``.

The pool calls ``update(backends)`` with its whole list on every change, one backend at a time
for a runtime add, remove, state or slow-start step. A strategy whose structure costs more than
O(n) to rebuild (a ring, heaps, buckets) asks the roster what changed and applies only that:

* ``joined``: backends that are eligible now and were not (new, or back from drain/down);
* ``left``: the objects held before for backends that are no longer eligible or present;
* ``changed``: ``(old, new)`` for a backend still eligible whose object was replaced (the pool
  makes a fresh one when an address changes; tests send fresh copies) or whose
  ``effective_weight`` changed.

The diff itself is O(n) but runs in C where it can (``map``, ``compress``, list and set
comparisons): a pool whose list holds the same objects as last time is compared element-wise
for weights and eligibility only.

A pool can say what it changed: it hands ``update`` a ``Members`` list (a plain list to any
other strategy) that names the backends touched since its previous list. When the roster saw
that previous list, it looks at those backends alone, so one runtime change costs the same at
10,000 backends as at 10; otherwise (a first list, a snapshot, a list built by hand) it diffs
the whole list as above.

Ranks follow the pool's order (what a strategy uses to break ties "first in the list"): a
backend keeps the rank it got when it first appeared, and a new one ranks after all others,
which is the pool's order as long as new backends are appended (a dict). When the order given
disagrees with the ranks, every backend is ranked again and ``reordered`` says so.
"""

from __future__ import annotations

import itertools
import operator
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from lb.model import AdminState, Backend, HealthState

# What ``Backend.eligible`` and a strategy's weights depend on, read in C one column at a time:
# an unchanged column compares equal at once (the same objects), a changed one says which
# backends may have changed, and only those have their ``eligible`` property read.
_STATE = ("admin", "health", "ejected", "effective_weight")
_state_getters = tuple(map(operator.attrgetter, _STATE))
_eligible_of = operator.attrgetter("eligible")
_READY = itertools.repeat(AdminState.READY)
_UP = itertools.repeat(HealthState.UP)
_ZERO = itertools.repeat(0)


def eligible_column(states: tuple[list[Any], ...], start: int = 0) -> list[bool]:
    """``Backend.eligible`` of each backend from its ``_STATE`` columns (from ``start``), in C
    rather than a property call each (a fifth of the time at 10,000 backends). The same rule
    as ``Backend.eligible``: a unit test holds them together."""
    admin, health, ejected, weight = (column[start:] if start else column for column in states)
    return list(
        map(
            all,
            zip(
                map(operator.is_, admin, _READY),
                map(operator.is_, health, _UP),
                map(operator.not_, ejected),
                map(operator.gt, weight, _ZERO),
                strict=True,
            ),
        )
    )


_id_of = operator.attrgetter("id")
_weight_of = operator.attrgetter("effective_weight")


class Members(list[Backend]):
    """A pool's backends in its order, with what changed since its previous list.

    ``lineage`` names the pool (an object of its own), ``generation`` counts its lists, and
    ``touched`` maps the id of every backend added, changed or removed (``None``) since list
    ``generation - 1``; ``None`` when the pool does not know (a snapshot). It is a hint: a
    ``Roster`` uses it only when it diffed list ``generation - 1`` of the same lineage."""

    __slots__ = ("generation", "lineage", "touched")

    def __init__(
        self,
        backends: Iterable[Backend],
        lineage: object,
        generation: int,
        touched: dict[str, Backend | None] | None,
    ) -> None:
        super().__init__(backends)
        self.lineage = lineage
        self.generation = generation
        self.touched = touched


@dataclass(slots=True)
class Changes:
    """One update's difference; see the module docstring."""

    joined: list[Backend] = field(default_factory=list)
    left: list[Backend] = field(default_factory=list)
    changed: list[tuple[Backend, Backend]] = field(default_factory=list)
    #: The ranks were renumbered (the order of the list changed, not only its members).
    reordered: bool = False

    def __bool__(self) -> bool:
        return bool(self.joined or self.left or self.changed or self.reordered)

    @property
    def size(self) -> int:
        return len(self.joined) + len(self.left) + len(self.changed)


class Roster:
    """The eligible backends last seen, by id, and the diff against a new list."""

    __slots__ = (
        "_eligible",
        "_generation",
        "_lineage",
        "_next_rank",
        "_objects",
        "_stale",
        "_states",
        "members",
        "rank",
        "weights",
    )

    def __init__(self) -> None:
        #: Eligible backends by id, in the order they became members.
        self.members: dict[str, Backend] = {}
        #: Their effective weights as last seen.
        self.weights: dict[str, float] = {}
        #: Every backend of the last list (eligible or not) -> its rank in the pool's order.
        self.rank: dict[str, int] = {}
        self._next_rank = 0
        self._objects: list[Backend] = []
        self._states: tuple[list[Any], ...] = tuple([] for _ in _STATE)
        self._eligible: list[bool] = []
        # The last list, when it was a Members list (see ``Members``).
        self._lineage: object = None
        self._generation = 0
        # _objects, _states and _eligible do not describe the last list (it was diffed from
        # its hint): the next whole-list diff compares by id.
        self._stale = False

    def diff(self, backends: Sequence[Backend]) -> Changes:
        """Compare ``backends`` with the last list, remember it, and say what changed."""
        if isinstance(backends, Members):
            follows = (
                backends.lineage is self._lineage
                and backends.generation == self._generation + 1
                and self._lineage is not None
            )
            self._lineage, self._generation = backends.lineage, backends.generation
            if follows and backends.touched is not None:
                return self._diff_touched(backends.touched)
        else:
            self._lineage = None
        objects = list(backends)
        states = tuple(list(map(get, objects)) for get in _state_getters)
        if self._stale:
            eligible = eligible_column(states)
            changes = self._general(objects, eligible)
            self._objects, self._states, self._eligible = objects, states, eligible
            self._stale = False
            return changes
        if not self._objects and not self.rank and objects:
            return self._first(objects, states)
        removed: list[Backend] = []
        old = self._objects
        n, m = len(objects), len(old)
        # The pool's common changes keep the other backends in place: compare those in C.
        if objects == old:  # Backend has no __eq__: this compares identities
            same, added = objects, []
            old_states, old_eligible = self._states, self._eligible
        elif n > m and objects[:m] == old:  # appended
            same, added = old, objects[m:]
            old_states, old_eligible = self._states, self._eligible
        elif (
            n == m - 1
            and (k := _first_difference(objects, old)) < m
            and (objects[k:] == old[k + 1 :])
        ):  # one removed
            same, added, removed = objects, [], [old[k]]
            old_states = tuple(column[:k] + column[k + 1 :] for column in self._states)
            old_eligible = self._eligible[:k] + self._eligible[k + 1 :]
        else:
            eligible = eligible_column(states)
            changes = self._general(objects, eligible)
            self._objects, self._states, self._eligible = objects, states, eligible
            return changes
        eligible = list(old_eligible)
        changed: set[int] = set()
        for column, old_column in zip(states, old_states, strict=True):
            if column[: len(old_column)] != old_column:
                changed.update(
                    itertools.compress(itertools.count(), map(operator.ne, column, old_column))
                )
        where = sorted(changed)
        for i in where:
            eligible[i] = objects[i].eligible
        if added:
            eligible += eligible_column(states, len(same))
        changes = Changes()
        if added:
            ids = list(map(_id_of, added))
            if not self.rank.keys().isdisjoint(ids):
                changes.reordered = True  # a known id at a new place: rank them all again
                self.rank.clear()
                self._rank_new(list(map(_id_of, objects)))
            else:
                self._rank_new(ids)
        for b in removed:
            self.rank.pop(b.id, None)
            held = self.members.pop(b.id, None)
            if held is not None:
                del self.weights[b.id]
                changes.left.append(held)
        self._apply(
            [objects[i] for i in where] + added,
            [eligible[i] for i in where] + eligible[len(same) :],
            changes,
        )
        self._objects, self._states, self._eligible = objects, states, eligible
        return changes

    def _first(self, objects: list[Backend], states: tuple[list[Any], ...]) -> Changes:
        """A first list (10,000 backends at a worker's start): every eligible backend joins.
        The common case, all of them eligible and distinct, in a few passes in C."""
        ids = list(map(_id_of, objects))
        self._rank_new(ids)
        n = len(objects)
        admin, health, ejected, weight = states
        if (
            admin.count(AdminState.READY) == n
            and health.count(HealthState.UP) == n
            and ejected.count(False) == n
            and min(weight) > 0
        ):
            eligible = [True] * n
        else:
            eligible = eligible_column(states)
        self._objects, self._states, self._eligible = objects, states, eligible
        changes = Changes()
        if len(self.rank) == n and eligible.count(True) == n:  # distinct ids, all eligible
            self.members.update(zip(ids, objects, strict=True))
            self.weights.update(zip(ids, weight, strict=True))
            changes.joined = list(objects)
            return changes
        self._apply(objects, eligible, changes)
        return changes

    def _diff_touched(self, touched: dict[str, Backend | None]) -> Changes:
        """What changed, from the pool's word on which backends it touched."""
        changes = Changes()
        candidates: list[Backend] = []
        for backend_id, b in touched.items():
            if b is None:  # removed from the pool
                self.rank.pop(backend_id, None)
                held = self.members.pop(backend_id, None)
                if held is not None:
                    del self.weights[backend_id]
                    changes.left.append(held)
            else:
                if backend_id not in self.rank:  # new: the pool appended it
                    self._rank_new([backend_id])
                candidates.append(b)
        self._apply(candidates, list(map(_eligible_of, candidates)), changes)
        self._stale = True
        return changes

    def _rank_new(self, ids: list[str]) -> None:
        first = self._next_rank
        self._next_rank += len(ids)
        self.rank.update(zip(ids, range(first, self._next_rank), strict=True))

    def _apply(self, candidates: list[Backend], eligible: list[bool], changes: Changes) -> None:
        """Classify backends whose state changed, or that are new to the list."""
        members, weights = self.members, self.weights
        if not members and len(candidates) > 1:
            # A first list (10,000 backends at a worker's start): they all join, in C.
            joined = list(itertools.compress(candidates, eligible))
            ids = list(map(_id_of, joined))
            if len(set(ids)) == len(ids):  # else the loop below keeps the first of an id
                members.update(zip(ids, joined, strict=True))
                weights.update(zip(ids, map(_weight_of, joined), strict=True))
                changes.joined += joined
                return
        for b, ok in zip(candidates, eligible, strict=True):
            held = members.get(b.id)
            if ok and held is None:
                members[b.id] = b
                weights[b.id] = b.effective_weight
                changes.joined.append(b)
            elif not ok and held is not None:
                del members[b.id], weights[b.id]
                changes.left.append(held)
            elif held is not None and (held is not b or weights[b.id] != b.effective_weight):
                members[b.id] = b
                weights[b.id] = b.effective_weight
                changes.changed.append((held, b))

    def _general(self, objects: list[Backend], eligible: list[bool]) -> Changes:
        """Membership changed: compare by id."""
        changes = Changes()
        ids = list(map(_id_of, objects))
        self._rerank(ids, changes)
        now = dict(itertools.compress(zip(ids, objects, strict=True), eligible))
        members, weights = self.members, self.weights
        for gone in [i for i in members if i not in now]:
            changes.left.append(members.pop(gone))
            del weights[gone]
        for i, b in now.items():
            held = members.get(i)
            if held is None:
                members[i] = b
                weights[i] = b.effective_weight
                changes.joined.append(b)
            elif held is not b or weights[i] != b.effective_weight:
                members[i] = b
                weights[i] = b.effective_weight
                changes.changed.append((held, b))
        return changes

    def _rerank(self, ids: list[str], changes: Changes) -> None:
        rank = self.rank
        known = [rank.get(i) for i in ids]
        fresh = [i for i, r in zip(ids, known, strict=True) if r is None]
        if len(fresh) != len(ids) and fresh:
            # The new ones must all come after the known ones to keep the old ranks.
            first_new = known.index(None)
            if any(r is not None for r in known[first_new:]):
                fresh = []
                rank.clear()
                changes.reordered = True
        if not changes.reordered:
            ranked = [r for r in known if r is not None]
            if not all(map(operator.lt, ranked, ranked[1:])):
                rank.clear()
                changes.reordered = True
        if changes.reordered:
            fresh = ids
        for i in fresh:
            rank[i] = self._next_rank
            self._next_rank += 1
        if len(rank) != len(ids):
            for gone in rank.keys() - set(ids):
                del rank[gone]


def _first_difference(a: list[Backend], b: list[Backend]) -> int:
    """The first index where ``a`` and ``b`` hold different objects (``len(a)`` if none)."""
    return next(itertools.compress(itertools.count(), map(operator.is_not, a, b)), len(a))

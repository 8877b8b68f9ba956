"""Smooth weighted round-robin, exactly as nginx does it (``ngx_http_upstream_get_peer``).

Owns: the per-backend ``current`` weights, kept as bases in one heap per weight. Never does:
I/O or reading ``active``.

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
fresh copies), so a weight change does not restart the sequence.

pick() is O(k + log n), with k the number of distinct weights (see "Data structure").
Compiled (``weighted.pxd``): the pick's arithmetic is on C doubles, the same IEEE doubles
Python's floats are, so the sequence is the same compiled and in plain Python.

Data structure
--------------
nginx's ``current_i`` after ``t`` picks is ``c_i + t * w_i - W * p_i``: it changes on every pick
for every backend, but ``base_i = c_i - W * p_i`` changes only when ``i`` is picked. So the
strategy keeps ``base_i`` and the step count ``t``, and the value at step ``t + 1`` is
``base_i + (t + 1) * w_i``. Backends of equal weight rise at the same rate, so their order never
changes between their own picks: each weight class keeps a heap by ``(-base, rank)`` (``rank``
is the pool's order, nginx's tie-break). A pick compares the top of each class (k values), takes
the largest (the lowest rank on a tie) and lowers its base by ``W`` (``heapreplace``, in C).
With integer weights every value is an integer held exactly in a float, so the sequence is
nginx's exactly; with fractional weights ``(t + 1) * w_i`` is computed afresh rather than
accumulated, and the step count is folded into the bases every 2**24 picks.

``update`` applies only what changed (``Roster``). A backend keeps its value across updates
(by ``Backend.id``); a weight change moves it to its new class with the same value; a new or
returning backend starts at the mean of the members' values, rounded to an integer (nginx's 0
in a frame where the values sum to zero; the rounding keeps integer arithmetic exact); one that
leaves takes its value with it. k is small: the configured weights, plus one class per backend
in the middle of a slow start.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from heapq import heapify, heappop, heappush
from operator import attrgetter

from lb.balancing.options import StrategyOptions
from lb.balancing.roster import Roster
from lb.model import Backend

#: Fold the step count into the bases this often, so that ``t * w`` stays small (an O(n)
#: pass: about 2 ms at 10,000 backends every 16 million picks).
REBASE_EVERY = 1 << 24

_weight_of = attrgetter("effective_weight")
_id_of = attrgetter("id")


class _Member:
    """One eligible backend: ``key`` is ``-base``; ``rank`` its place in the pool's order."""

    __slots__ = ("backend", "key", "rank", "weight")

    def __init__(self, backend: Backend, weight: float, key: float, rank: int) -> None:
        self.backend = backend
        self.weight = weight
        self.key = key
        self.rank = rank


class _Class:
    """The members of one weight, ordered by ``(-base, rank)``: a heap of the distinct keys,
    and for each key a heap of the members' ranks. Both heaps hold plain numbers, so the
    comparisons are cheap, and members of equal weight and base (a fresh pool) share a key."""

    __slots__ = ("keys", "ranks", "weight")

    def __init__(self, weight: float) -> None:
        self.weight = weight
        self.keys: list[float] = []
        self.ranks: dict[float, list[int]] = {}

    def add(self, key: float, rank: int) -> None:
        ranks = self.ranks.get(key)
        if ranks is None:
            self.ranks[key] = [rank]
            heappush(self.keys, key)
        else:
            heappush(ranks, rank)

    def remove(self, key: float, rank: int) -> None:
        ranks = self.ranks[key]
        ranks.remove(rank)
        if ranks:
            heapify(ranks)
        else:
            del self.ranks[key]
            self.keys.remove(key)
            heapify(self.keys)


class WeightedRoundRobin:
    """nginx's smooth weighted round-robin over ``effective_weight``."""

    needs_key = False  # ignores the hash key

    __slots__ = (
        "_by_rank",
        "_by_weight",
        "_classes",
        "_members",
        "_negsum",
        "_roster",
        "_step",
        "_total",
    )

    def __init__(self, options: StrategyOptions) -> None:
        self._roster = Roster()
        self._members: dict[str, _Member] = {}
        self._by_rank: dict[int, _Member] = {}
        self._by_weight: dict[float, _Class] = {}
        self._classes: list[_Class] = []
        self._step = 0  # picks since the bases were last folded
        self._total = 0.0  # W
        self._negsum = 0.0  # the sum of -base over the members

    # -- membership -------------------------------------------------------------------------

    def update(self, backends: Sequence[Backend]) -> None:
        changes = self._roster.diff(backends)
        if not changes:
            return
        members = self._members
        rank = self._roster.rank
        t = self._step
        n = len(members)
        # The members' mean value before this update: where newcomers start.
        mean = (t * self._total - self._negsum) / n if n else 0.0
        start = float(round(mean))
        for b in changes.left:
            self._drop(members.pop(b.id))
        for _old, new in changes.changed:
            m = members[new.id]
            m.backend = new
            if new.effective_weight != m.weight:
                value = t * m.weight - m.key
                self._drop(m)
                m.weight = new.effective_weight
                m.key = t * m.weight - value
                self._place(m)
        if changes.reordered:
            self._rerank()
        if not members and len(changes.joined) > 1:
            self._join_all(changes.joined, t)
        else:
            for b in changes.joined:
                weight = b.effective_weight
                m = members[b.id] = _Member(b, weight, t * weight - start, rank[b.id])
                self._place(m)
        self._total = sum(self._roster.weights.values())
        self._classes = list(self._by_weight.values())

    def _join_all(self, joined: list[Backend], t: int) -> None:
        """The first members (10,000 at a worker's start) in bulk: what ``_place`` does for
        each, with the Python per member cut to making it. With no members before, every
        newcomer starts at 0 (``start``), so a class holds one key: ``t * weight``, and its
        ranks in order (a sorted list is a heap)."""
        rank = self._roster.rank
        weights = list(map(_weight_of, joined))
        ranks = list(map(rank.__getitem__, map(_id_of, joined)))
        keys = [t * w for w in weights] if t else [0.0] * len(weights)
        made = list(map(_Member, joined, weights, keys, ranks))
        self._members.update(zip(map(_id_of, joined), made, strict=True))
        self._by_rank.update(zip(ranks, made, strict=True))
        # The ranks of each weight class; joined in rank order, so each list is sorted.
        by_weight: dict[float, list[int]] = {}
        for weight, r in zip(weights, ranks, strict=True):
            class_ranks = by_weight.get(weight)
            if class_ranks is None:
                by_weight[weight] = [r]
            else:
                class_ranks.append(r)
        for weight, class_ranks in by_weight.items():
            if not all(map(operator.lt, class_ranks, class_ranks[1:])):
                class_ranks.sort()
            key = t * weight if t else 0.0
            klass = self._by_weight[weight] = _Class(weight)
            klass.keys = [key]
            klass.ranks = {key: class_ranks}
            self._negsum += key * len(class_ranks)

    def _place(self, m: _Member) -> None:
        klass = self._by_weight.get(m.weight)
        if klass is None:
            klass = self._by_weight[m.weight] = _Class(m.weight)
        klass.add(m.key, m.rank)
        self._by_rank[m.rank] = m
        self._negsum += m.key

    def _drop(self, m: _Member) -> None:
        klass = self._by_weight[m.weight]
        klass.remove(m.key, m.rank)
        if not klass.keys:
            del self._by_weight[m.weight]
        del self._by_rank[m.rank]
        self._negsum -= m.key

    def _rerank(self) -> None:
        """The pool's order changed: every member takes its new rank."""
        rank = self._roster.rank
        self._by_weight = {}
        self._by_rank = {}
        self._negsum = 0.0
        for m in self._members.values():
            m.rank = rank[m.backend.id]
            self._place(m)

    def _fold(self) -> None:
        """Move ``t * w`` into the keys and restart the step count at 0. A whole class moves by
        the same amount, so its order holds (rounding may only merge equal keys): O(n), no
        re-sort, and rare."""
        t = self._step
        self._step = 0
        for klass in self._by_weight.values():
            shift = t * klass.weight
            moved: dict[float, list[int]] = {}
            for key, ranks in klass.ranks.items():
                lowered = key - shift
                if lowered in moved:  # two keys rounded to one: merge their ranks
                    ranks = moved[lowered] + ranks
                    heapify(ranks)
                moved[lowered] = ranks
            klass.ranks = moved
            klass.keys = list(moved)
            heapify(klass.keys)
        for m in self._members.values():
            m.key -= t * m.weight  # the same operation as the class's keys
        self._negsum -= t * self._total

    # -- picking ----------------------------------------------------------------------------

    def pick(self, key: bytes | None) -> Backend | None:
        classes = self._classes
        if not classes:
            return None
        t = self._step + 1
        best = classes[0]
        top = best.keys[0]
        value = t * best.weight - top
        rank = best.ranks[top][0]
        for i in range(1, len(classes)):  # (compiled: a C loop, no slice)
            klass = classes[i]
            k = klass.keys[0]
            v = t * klass.weight - k
            if v > value or (v == value and klass.ranks[k][0] < rank):
                best, value, top, rank = klass, v, k, klass.ranks[k][0]
        ranks = best.ranks[top]
        heappop(ranks)
        if not ranks:
            del best.ranks[top]
            heappop(best.keys)
        total = self._total
        lowered = top + total  # the base goes down by W
        below = best.ranks.get(lowered)
        if below is None:
            best.ranks[lowered] = [rank]
            heappush(best.keys, lowered)
        else:
            heappush(below, rank)
        m = self._by_rank[rank]
        m.key = lowered
        self._negsum += total
        self._step = t
        if t >= REBASE_EVERY:
            self._fold()
        return m.backend

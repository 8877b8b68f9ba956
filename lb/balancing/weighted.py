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
accumulated, and the step count is folded into the bases every 2**20 picks.

``update`` applies only what changed (``Roster``). A backend keeps its value across updates
(by ``Backend.id``); a weight change moves it to its new class with the same value; a new or
returning backend starts at the mean of the members' values, rounded to an integer (nginx's 0
in a frame where the values sum to zero; the rounding keeps integer arithmetic exact); one that
leaves takes its value with it. k is small: the configured weights, plus one class per backend
in the middle of a slow start.
"""

from __future__ import annotations

from collections.abc import Sequence
from heapq import heapify, heappop, heappush, heapreplace

from lb.balancing.options import StrategyOptions
from lb.balancing.roster import Roster
from lb.model import Backend

#: Fold the step count into the bases this often, so that ``t * w`` stays small.
REBASE_EVERY = 1 << 20


class _Member:
    """One eligible backend: its heap item is ``[-base, rank, seq, member]``; an item whose
    member is None is stale (the backend left or moved) and is dropped when it reaches a top."""

    __slots__ = ("backend", "item", "klass", "weight")

    def __init__(self, backend: Backend, weight: float) -> None:
        self.backend = backend
        self.weight = weight
        self.item: list[object] = []
        self.klass: _Class | None = None


class _Class:
    """The members of one weight, in a heap by ``(-base, rank)``."""

    __slots__ = ("heap", "live", "weight")

    def __init__(self, weight: float) -> None:
        self.weight = weight
        self.heap: list[list[object]] = []
        self.live = 0


class WeightedRoundRobin:
    """nginx's smooth weighted round-robin over ``effective_weight``."""

    needs_key = False  # ignores the hash key

    __slots__ = (
        "_by_weight",
        "_classes",
        "_members",
        "_negsum",
        "_roster",
        "_seq",
        "_step",
        "_total",
    )

    def __init__(self, options: StrategyOptions) -> None:
        self._roster = Roster()
        self._members: dict[str, _Member] = {}
        self._by_weight: dict[float, _Class] = {}
        self._classes: list[_Class] = []
        self._step = 0  # picks since the bases were last folded
        self._total = 0.0  # W
        self._negsum = 0.0  # the sum of -base over the members
        self._seq = 0

    # -- membership -------------------------------------------------------------------------

    def update(self, backends: Sequence[Backend]) -> None:
        changes = self._roster.diff(backends)
        if not changes:
            return
        members = self._members
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
                value = t * m.weight - float(m.item[0])  # type: ignore[arg-type]
                self._drop(m)
                m.weight = new.effective_weight
                self._place(m, t * m.weight - value)
        for b in changes.joined:
            m = members[b.id] = _Member(b, b.effective_weight)
            self._place(m, t * m.weight - start)
        if changes.reordered:
            self._rerank()
        self._total = sum(self._roster.weights.values())
        self._classes = list(self._by_weight.values())

    def _place(self, m: _Member, negbase: float) -> None:
        klass = self._by_weight.get(m.weight)
        if klass is None:
            klass = self._by_weight[m.weight] = _Class(m.weight)
        self._seq += 1
        m.item = [negbase, self._roster.rank[m.backend.id], self._seq, m]
        m.klass = klass
        klass.live += 1
        heappush(klass.heap, m.item)
        self._negsum += negbase

    def _drop(self, m: _Member) -> None:
        klass = m.klass
        assert klass is not None
        self._negsum -= float(m.item[0])  # type: ignore[arg-type]
        m.item[3] = None
        klass.live -= 1
        if not klass.live:
            del self._by_weight[klass.weight]
            return
        heap = klass.heap
        while heap[0][3] is None:
            heappop(heap)
        if len(heap) > 2 * klass.live + 16:  # mostly stale: compact
            klass.heap = [item for item in heap if item[3] is not None]
            heapify(klass.heap)

    def _rerank(self) -> None:
        rank = self._roster.rank
        for klass in self._by_weight.values():
            heap = [item for item in klass.heap if item[3] is not None]
            for item in heap:
                item[1] = rank[item[3].backend.id]  # type: ignore[attr-defined]
            heapify(heap)
            klass.heap = heap

    def _fold(self) -> None:
        """Move ``t * w`` into the bases and restart the step count at 0 (the same shift for a
        whole class keeps its heap in order)."""
        t = self._step
        for klass in self._by_weight.values():
            shift = t * klass.weight
            for item in klass.heap:
                item[0] -= shift  # type: ignore[operator]
        self._negsum -= t * self._total
        self._step = 0

    # -- picking ----------------------------------------------------------------------------

    def pick(self, key: bytes | None) -> Backend | None:
        classes = self._classes
        if not classes:
            return None
        t = self._step + 1
        best = classes[0]
        top = best.heap[0]
        value = t * best.weight - top[0]  # type: ignore[operator]
        rank = top[1]
        for klass in classes[1:]:
            top = klass.heap[0]
            v = t * klass.weight - top[0]  # type: ignore[operator]
            if v > value or (v == value and top[1] < rank):  # type: ignore[operator]
                best, value, rank = klass, v, top[1]
        heap = best.heap
        item = heap[0]
        m: _Member = item[3]  # type: ignore[assignment]
        total = self._total
        self._seq += 1
        m.item = [item[0] + total, rank, self._seq, m]  # type: ignore[operator]
        heapreplace(heap, m.item)
        while heap[0][3] is None:
            heappop(heap)
        self._negsum += total
        self._step = t
        if t >= REBASE_EVERY:
            self._fold()
        return m.backend

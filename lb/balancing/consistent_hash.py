"""Consistent hashing on a ring of virtual nodes, with optional bounded loads.

Owns: the ring (sorted 64-bit points and their owners) and the keyless cursor. Never does:
I/O, or use Python's ``hash()``: every worker, restart and LB instance must map a key to the
same backend, so all hashing is xxh3-64 of stable bytes.

Theory of operation
-------------------
Each eligible backend puts ``max(1, round(vnodes * effective_weight))`` points on a 64-bit
ring; point ``i`` of a backend is ``xxh3_64(f"{backend.id}#{i}")``. A key goes to the owner of
the first point at or after ``xxh3_64(key)``, wrapping at the end (``bisect``).

Why a ring and not Maglev: a ring gives the exact minimal-disruption guarantees we promise
(removing, draining or ejecting a backend moves only that backend's keys; raising one weight
moves keys only onto that backend, so slow start ramps hashed traffic onto a new backend
gradually), a clockwise walk is exactly what bounded loads need, and a weight is simply a
number of points. Maglev's O(1) lookup buys little over an O(log n) ``bisect`` in C, and its
table rebuild moves a few keys between unrelated backends.

The ring is built from the eligible backends sorted by ``id``, so it does not depend on the
order of the list passed to ``update``; per-backend point hashes are cached between updates.
Points and owners live in ``array``s (12 bytes per point) so that large pools stay small.

``key is None`` (nothing to hash on): a cursor steps one ring point per pick. Over a full lap
every backend gets exactly its number of points, i.e. weighted round-robin with a pseudo-random
interleave; bounded loads apply to it too.

Bounded loads (``options.bounded_load = c >= 1``, "Consistent Hashing with Bounded Loads",
HAProxy's ``hash-balance-factor``): with ``T`` the total ``active`` over the eligible backends
and ``W`` their total weight, backend ``b`` is skipped when
``active_b + 1 > ceil(c * (T + 1) * w_b / W)``, and the walk goes clockwise to the next
point. With equal weights this is the paper's ``ceil(c * (T + 1) / n)``. Because ``c >= 1``
some backend is always under its bound, so the walk ends. The sum over backends makes such a
pick O(n) in C, but only when the key's first choice is busy (``active > 0``).
"""

from __future__ import annotations

import math
import operator
from array import array
from bisect import bisect_left
from collections.abc import Sequence
from itertools import repeat

from xxhash import xxh3_64_intdigest

from lb.balancing.options import StrategyOptions
from lb.model import Backend

_active = operator.attrgetter("active")


def hash_key(key: bytes) -> int:
    """The ring position of a key. Stable across processes, hosts and versions of Python."""
    return xxh3_64_intdigest(key)


def point_hashes(backend_id: str, start: int, stop: int) -> list[int]:
    """Ring positions of a backend's virtual nodes ``start .. stop - 1``."""
    return [xxh3_64_intdigest(f"{backend_id}#{i}".encode()) for i in range(start, stop)]


class ConsistentHash:
    """A ring with ``vnodes`` points per unit of weight; see the module docstring."""

    __slots__ = (
        "_backends",
        "_bound",
        "_cache",
        "_cursor",
        "_owners",
        "_points",
        "_size",
        "_total_weight",
        "_vnodes",
        "_weights",
    )

    def __init__(self, options: StrategyOptions) -> None:
        if options.vnodes < 1:
            raise ValueError(f"vnodes must be >= 1, got {options.vnodes!r}")
        bound = options.bounded_load
        if bound is not None and not (math.isfinite(bound) and bound >= 1.0):
            raise ValueError(
                f"bounded_load must be a number >= 1 (a factor of the mean load), got {bound!r}"
            )
        self._vnodes = options.vnodes
        self._bound = bound
        self._backends: tuple[Backend, ...] = ()
        self._weights: tuple[float, ...] = ()
        self._total_weight = 0.0
        self._points = array("Q")
        self._owners = array("I")
        self._size = 0
        self._cursor = 0
        self._cache: dict[str, list[int]] = {}

    def update(self, backends: Sequence[Backend]) -> None:
        eligible = sorted((b for b in backends if b.eligible), key=operator.attrgetter("id"))
        cache: dict[str, list[int]] = {}
        for b in backends:  # keep hashes of drained/down backends: they usually come back
            if b.id in self._cache:
                cache[b.id] = self._cache[b.id]
        hashes: list[int] = []
        owners: list[int] = []
        for index, b in enumerate(eligible):
            count = self.point_count(b)
            points = cache.get(b.id, [])
            if len(points) < count:
                points = points + point_hashes(b.id, len(points), count)
                cache[b.id] = points
            hashes += points[:count]
            owners += repeat(index, count)
        # Stable sort by hash; equal hashes keep id order, so the ring is deterministic.
        order = sorted(range(len(hashes)), key=hashes.__getitem__)
        self._points = array("Q", map(hashes.__getitem__, order))
        self._owners = array("I", map(owners.__getitem__, order))
        self._size = len(order)
        self._cursor = self._cursor % self._size if self._size else 0
        self._backends = tuple(eligible)
        self._weights = tuple(b.effective_weight for b in eligible)
        self._total_weight = sum(self._weights)
        self._cache = cache

    def point_count(self, backend: Backend) -> int:
        """How many ring points a backend gets at its current effective weight."""
        return max(1, round(self._vnodes * backend.effective_weight))

    def pick(self, key: bytes | None) -> Backend | None:
        size = self._size
        if not size:
            return None
        if key is None:
            pos = self._cursor
            self._cursor = pos + 1 if pos + 1 < size else 0
        else:
            pos = bisect_left(self._points, xxh3_64_intdigest(key))
            if pos == size:
                pos = 0
        backend = self._backends[self._owners[pos]]
        # An idle backend is always within its bound (the bound is >= 1): skip the O(n) sum.
        bound = self._bound
        if bound is None or backend.active == 0:
            return backend
        return self._walk(pos, backend, bound)

    def _walk(self, pos: int, first: Backend, bound: float) -> Backend:
        """Bounded loads: walk clockwise from ``pos`` to the first backend under its bound."""
        backends = self._backends
        weights = self._weights
        owners = self._owners
        size = self._size
        total = sum(map(_active, backends))
        per_weight = bound * (total + 1) / self._total_weight
        for _ in range(size):
            owner = owners[pos]
            if backends[owner].active < math.ceil(per_weight * weights[owner]):
                return backends[owner]
            pos = pos + 1 if pos + 1 < size else 0
        return first  # unreachable while c >= 1 and the counts add up; keep the affinity

"""Consistent hashing on a ring of virtual nodes, with optional bounded loads.

Owns: the ring (sorted, packed 64-bit points) and the keyless cursor. Never does:
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

A ring point is packed into one unsigned 64-bit integer: the top 44 bits of the point's hash,
then 20 bits holding the owner's rank among the eligible backends sorted by ``id``. A key's
position is the top 44 bits of its hash, so ``bisect`` on the packed array finds the first
point at or after it, and the low bits say whose point it is. Ranks follow ``id`` order, so
they only break (rare) ties between equal positions, deterministically, and removing a
backend never reorders the others' points. The ring is a single ``array('Q')`` (8 bytes a
point); each backend's point hashes are cached between updates, so an update costs a sort,
not a rehash. At most 2**20 eligible backends fit.

``key is None`` (nothing to hash on): a cursor steps one ring point per pick. Over a full lap
every backend gets exactly its number of points, i.e. weighted round-robin with a pseudo-random
interleave; bounded loads apply to it too.

Bounded loads (``options.bounded_load = c >= 1``, "Consistent Hashing with Bounded Loads",
HAProxy's ``hash-balance-factor``): with ``T`` the total ``active`` over the eligible backends
and ``W`` their total weight, backend ``b`` is skipped when
``active_b + 1 > ceil(c * (T + 1) * w_b / W)``, and the walk goes clockwise to the next
point. With equal weights this is the paper's ``ceil(c * (T + 1) / n)``. Because ``c >= 1``
some backend is always under its bound, so the walk ends. Summing ``active`` makes such a
pick O(n), but only when the key's first choice is busy (``active > 0``); an idle first
choice is always within its bound.
"""

from __future__ import annotations

import math
import operator
from array import array
from bisect import bisect_left
from collections.abc import Sequence

from xxhash import xxh3_64_intdigest

from lb.balancing.options import StrategyOptions
from lb.model import Backend

_OWNER_BITS = 20
_OWNER_MASK = (1 << _OWNER_BITS) - 1
_POSITION_MASK = ((1 << 64) - 1) ^ _OWNER_MASK
MAX_BACKENDS = 1 << _OWNER_BITS


def hash_key(key: bytes) -> int:
    """The ring position of a key. Stable across processes, hosts and versions of Python."""
    return xxh3_64_intdigest(key)


def point_positions(backend_id: str, start: int, stop: int) -> array[int]:
    """Ring positions (owner bits clear) of a backend's virtual nodes ``start .. stop - 1``."""
    return array(
        "Q",
        [
            xxh3_64_intdigest(f"{backend_id}#{i}".encode()) & _POSITION_MASK
            for i in range(start, stop)
        ],
    )


class ConsistentHash:
    """A ring with ``vnodes`` points per unit of weight; see the module docstring."""

    needs_key = True  # picks by the hash key

    __slots__ = (
        "_backends",
        "_bound",
        "_cache",
        "_cursor",
        "_ring",
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
        self._ring = array("Q")
        self._size = 0
        self._cursor = 0
        self._cache: dict[str, array[int]] = {}

    def update(self, backends: Sequence[Backend]) -> None:
        eligible = sorted((b for b in backends if b.eligible), key=operator.attrgetter("id"))
        if len(eligible) > MAX_BACKENDS:
            raise ValueError(f"consistent_hash supports at most {MAX_BACKENDS} eligible backends")
        # Keep the hashes of drained or down backends too: they usually come back.
        old = self._cache
        cache = {b.id: old[b.id] for b in backends if b.id in old}
        packed: list[int] = []
        for rank, b in enumerate(eligible):
            count = self.point_count(b)
            positions = cache.get(b.id)
            if positions is None:
                positions = cache[b.id] = point_positions(b.id, 0, count)
            elif len(positions) < count:
                positions = positions + point_positions(b.id, len(positions), count)
                cache[b.id] = positions
            packed += [p | rank for p in positions[:count]]
        packed.sort()
        self._ring = array("Q", packed)
        self._size = len(packed)
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
            pos = bisect_left(self._ring, xxh3_64_intdigest(key) & _POSITION_MASK)
            if pos == size:
                pos = 0
        backend = self._backends[self._ring[pos] & _OWNER_MASK]
        # An idle backend is always within its bound (the bound is >= 1): skip the O(n) sum.
        bound = self._bound
        if bound is None or backend.active == 0:
            return backend
        return self._walk(pos, backend, bound)

    def _walk(self, pos: int, first: Backend, bound: float) -> Backend:
        """Bounded loads: walk clockwise from ``pos`` to the first backend under its bound."""
        backends = self._backends
        weights = self._weights
        ring = self._ring
        size = self._size
        total = sum([b.active for b in backends])
        per_weight = bound * (total + 1) / self._total_weight
        for _ in range(size):
            owner = ring[pos] & _OWNER_MASK
            if backends[owner].active < math.ceil(per_weight * weights[owner]):
                return backends[owner]
            pos = pos + 1 if pos + 1 < size else 0
        return first  # unreachable while c >= 1 and the counts add up; keep the affinity

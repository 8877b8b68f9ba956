"""Consistent hashing on a ring of virtual nodes, with optional bounded loads.

Owns: the ring (sorted, packed 64-bit points) and the keyless cursor. Never does:
I/O, or use Python's ``hash()``: every worker, restart and LB instance must map a key to the
same backend, so all hashing is of stable bytes with stable functions: xxh3-64 for keys,
SHAKE-128 for a backend's points.

Theory of operation
-------------------
Each eligible backend puts ``max(1, round(vnodes * effective_weight))`` points on a ring of
42-bit positions; point ``i`` of a backend is bits 20-61 of the little-endian 64-bit word ``i``
of ``shake_128(backend.id)`` (one hash call gives a backend's points, however many). A key goes
to the owner of the first point at or after bits 20-61 of ``xxh3_64(key)``, wrapping at the
end (``bisect``).

Why a ring and not Maglev: a ring gives the exact minimal-disruption guarantees we promise
(removing, draining or ejecting a backend moves only that backend's keys; raising one weight
moves keys only onto that backend, so slow start ramps hashed traffic onto a new backend
gradually), a clockwise walk is exactly what bounded loads need, and a weight is simply a
number of points. Maglev's O(1) lookup buys little over an O(log n) ``bisect`` in C, and its
table rebuild moves a few keys between unrelated backends.

A ring point is packed into one unsigned 64-bit integer: two clear bits, the 42 bits of its
position, then 20 bits naming its owner (a slot number; at most 2**20 eligible backends fit).
A key's position has its owner bits clear, so a binary search for it finds the first point at
or after it, and the low bits say whose point it is. Points at equal positions (rare: about
one pair per three rings of 10,000 backends) are ordered by their owners' ``id``, so every
worker, restart and LB instance sees the same ring whatever order its backends came in. The
two clear bits make a packed point, read as an IEEE double, a finite non-negative number that
orders as the integer does: the first build sorts 1.6 million points as doubles, which Python
compares several times faster than 64-bit integers, with no Python code run per point.

The ring is kept as a list of sorted chunks of at most ``2 * CHUNK`` points (``array('Q')``,
8 bytes a point) with the last point of each in a list ``maxes``, as ``sortedcontainers``
does: a lookup is a ``bisect`` on ``maxes`` and one in a chunk (both in C), and adding or
removing one backend inserts or deletes its ~160 points, each a short ``memmove`` in one chunk,
instead of re-sorting the ring. ``update`` applies only what changed (``Roster``): a new or
returning backend adds its points, one that leaves removes them, a weight change adds or removes
the points past the smaller count. A first update, or one that changes more than a quarter of
the backends, builds the ring at once (slots by ``id`` order, one sort). Each backend's point
positions are cached while it is in the pool (eligible or not), so it never hashes twice.

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

import functools
import math
import sys
from array import array
from bisect import bisect_left
from collections.abc import Sequence
from hashlib import shake_128
from math import ceil

from xxhash import xxh3_64_intdigest

from lb.balancing.options import StrategyOptions
from lb.balancing.roster import Roster
from lb.model import Backend

_OWNER_BITS = 20
_OWNER_MASK = (1 << _OWNER_BITS) - 1
#: A position is bits 20 to 61 of a 64-bit hash: the top two bits stay clear, so that a packed
#: point read as an IEEE double is a finite, non-negative number ordered as the integer is
#: (the first build sorts the ring as floats, which Python compares much faster than 64-bit
#: integers).
_POSITION_MASK = ((1 << 62) - 1) ^ _OWNER_MASK
MAX_BACKENDS = 1 << _OWNER_BITS
#: Points per chunk of the ring: a chunk splits above twice this, and merges below a quarter.
CHUNK = 1024

_ORDER = sys.byteorder  # arrays hold native words; the hash's bytes are read little-endian
_POSITION_WORD = _POSITION_MASK.to_bytes(8, _ORDER)


def hash_key(key: bytes) -> int:
    """The 64-bit hash of a key (its ring position is ``hash_key(key) & _POSITION_MASK``).
    Stable across processes, hosts and versions of Python."""
    return xxh3_64_intdigest(key)


@functools.lru_cache(maxsize=64)
def _position_masks(count: int) -> int:
    """``_POSITION_MASK`` in each of ``count`` native words, as one integer: masking a
    backend's words is then one big-integer ``&``, in C."""
    return int.from_bytes(_POSITION_WORD * count, _ORDER)


def point_positions(backend_id: str, start: int, stop: int) -> array[int]:
    """Ring positions (owner bits clear) of a backend's virtual nodes ``start .. stop - 1``.

    Point ``i`` is the little-endian 64-bit word ``i`` of SHAKE-128 of the backend's ``id``
    (FIPS 202: the same bytes on every host and version), masked to a position: one hash call
    gives all of a backend's points, and asking for more points extends the same stream.
    """
    count = stop - start
    digest = shake_128(backend_id.encode()).digest(8 * stop)[8 * start :]
    if _ORDER == "big":
        swapped = array("Q", digest)
        swapped.byteswap()
        digest = swapped.tobytes()
    masked = int.from_bytes(digest, _ORDER) & _position_masks(count)
    return array("Q", masked.to_bytes(8 * count, _ORDER))


class ConsistentHash:
    """A ring with ``vnodes`` points per unit of weight; see the module docstring."""

    needs_key = True  # picks by the hash key

    __slots__ = (
        "_active",
        "_bound",
        "_cache",
        "_chunks",
        "_counts",
        "_cursor",
        "_cursor_chunk",
        "_free",
        "_held",
        "_load",
        "_maxes",
        "_roster",
        "_size",
        "_slot_of",
        "_slots",
        "_total_weight",
        "_vnodes",
        "_weights",
        "tracks_load",
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
        # With a bound, the pool reports every change of ``active`` (the total T).
        self.tracks_load = bound is not None
        self._roster = Roster()
        # Slot -> the backend owning it (None: free), its effective weight and (bounded loads)
        # its ``active``: the walk reads these compact lists, not 10,000 scattered objects.
        self._slots: list[Backend | None] = []
        self._weights = array("d")
        self._active: list[int] = []
        self._free: list[int] = []
        self._slot_of: dict[str, int] = {}
        self._counts: dict[str, int] = {}  # id -> points on the ring
        self._held: dict[Backend, int] = {}  # the eligible backends -> their slots (hooks)
        self._load = 0  # T: the total ``active`` over them
        self._total_weight = 0.0
        self._chunks: list[array[int]] = []
        self._maxes: list[int] = []
        self._size = 0
        self._cursor_chunk = 0
        self._cursor = 0
        self._cache: dict[str, array[int]] = {}

    # -- membership -------------------------------------------------------------------------

    def update(self, backends: Sequence[Backend]) -> None:
        roster = self._roster
        changes = roster.diff(backends)
        if not changes:
            return
        if len(roster.members) > MAX_BACKENDS:
            raise ValueError(f"consistent_hash supports at most {MAX_BACKENDS} eligible backends")
        if changes.size * 4 > max(len(roster.members), 32):
            self._build()
        else:
            for b in changes.left:
                self._leave(b)
            for old, new in changes.changed:
                self._change(old, new)
            for b in changes.joined:
                self._join(b)
            self._normalize_cursor()
        self._total_weight = sum(roster.weights.values())
        cache = self._cache
        if len(cache) > len(roster.rank):
            for gone in cache.keys() - roster.rank.keys():
                del cache[gone]

    def point_count(self, backend: Backend) -> int:
        """How many ring points a backend gets at its current effective weight."""
        return max(1, round(self._vnodes * backend.effective_weight))

    def _positions(self, backend: Backend, count: int) -> array[int]:
        """The first ``count`` point positions of ``backend`` (cached, hashed once)."""
        positions = self._cache.get(backend.id)
        if positions is None:
            positions = self._cache[backend.id] = point_positions(backend.id, 0, count)
        elif len(positions) < count:
            positions += point_positions(backend.id, len(positions), count)
        return positions

    def _build(self) -> None:
        """The whole ring at once: slots in ``id`` order, so one sort orders ties by id.

        No Python code runs per point: the owners go in with one big-integer ``|`` over the
        whole ring, and the sort compares the packed words as doubles (ordered as the words
        are, see ``_POSITION_MASK``)."""
        eligible = sorted(self._roster.members.values(), key=lambda b: b.id)
        counts = {}
        positions: list[bytes] = []
        owners: list[bytes] = []
        for slot, b in enumerate(eligible):
            count = counts[b.id] = self.point_count(b)
            positions.append(self._positions(b, count)[:count].tobytes())
            owners.append(slot.to_bytes(8, _ORDER) * count)
        words = b"".join(positions)
        packed = int.from_bytes(words, _ORDER) | int.from_bytes(b"".join(owners), _ORDER)
        as_floats = array("d", packed.to_bytes(len(words), _ORDER))
        ring = array("Q", array("d", sorted(as_floats)).tobytes())
        self._chunks = [ring[i : i + CHUNK] for i in range(0, len(ring), CHUNK)]
        self._maxes = [chunk[-1] for chunk in self._chunks]
        self._size = len(ring)
        self._slots = list(eligible)
        self._weights = array("d", [b.effective_weight for b in eligible])
        self._active = [b.active for b in eligible]
        self._free = []
        self._slot_of = {b.id: slot for slot, b in enumerate(eligible)}
        self._counts = counts
        self._held = {b: slot for slot, b in enumerate(eligible)}
        self._load = sum(self._active)
        self._normalize_cursor()

    def _join(self, b: Backend) -> None:
        slot = self._free.pop() if self._free else len(self._slots)
        if slot == len(self._slots):
            self._slots.append(b)
            self._weights.append(b.effective_weight)
            self._active.append(b.active)
        else:
            self._slots[slot] = b
            self._weights[slot] = b.effective_weight
            self._active[slot] = b.active
        self._slot_of[b.id] = slot
        count = self._counts[b.id] = self.point_count(b)
        for p in sorted(self._positions(b, count)[:count]):
            self._insert(p, slot, b.id)
        self._held[b] = slot
        self._load += b.active

    def _leave(self, b: Backend) -> None:
        slot = self._slot_of.pop(b.id)
        for p in self._cache[b.id][: self._counts.pop(b.id)]:
            self._remove(p | slot)
        self._slots[slot] = None
        self._free.append(slot)
        del self._held[b]
        self._load -= self._active[slot]
        self._active[slot] = 0

    def _change(self, old: Backend, new: Backend) -> None:
        slot = self._slot_of[new.id]
        self._slots[slot] = new
        self._weights[slot] = new.effective_weight
        del self._held[old]
        self._held[new] = slot
        self._load += new.active - self._active[slot]
        self._active[slot] = new.active
        have = self._counts[new.id]
        count = self._counts[new.id] = self.point_count(new)
        positions = self._positions(new, count)
        for p in sorted(positions[count:have]):
            self._remove(p | slot)
        for p in sorted(positions[have:count]):
            self._insert(p, slot, new.id)

    def _insert(self, position: int, slot: int, backend_id: str) -> None:
        chunks, maxes, slots = self._chunks, self._maxes, self._slots
        value = position | slot
        self._size += 1
        if not chunks:
            chunks.append(array("Q", [value]))
            maxes.append(value)
            return
        ci = bisect_left(maxes, position)
        if ci == len(maxes):  # after every point
            ci -= 1
            i = len(chunks[ci])
        else:
            i = bisect_left(chunks[ci], position)
            # Points at the same position go in ``id`` order.
            while True:
                chunk = chunks[ci]
                if i == len(chunk):
                    if ci + 1 == len(chunks):
                        break
                    nxt = chunks[ci + 1][0]
                    if nxt & _POSITION_MASK != position or _id(slots, nxt) > backend_id:
                        break
                    ci, i = ci + 1, 0
                    continue
                v = chunk[i]
                if v & _POSITION_MASK != position or _id(slots, v) > backend_id:
                    break
                i += 1
        chunk = chunks[ci]
        chunk.insert(i, value)
        if i == len(chunk) - 1:
            maxes[ci] = value
        if len(chunk) > 2 * CHUNK:
            half = len(chunk) // 2
            chunks[ci : ci + 1] = [chunk[:half], chunk[half:]]
            maxes[ci : ci + 1] = [chunk[half - 1], chunk[-1]]

    def _remove(self, value: int) -> None:
        chunks, maxes = self._chunks, self._maxes
        ci = bisect_left(maxes, value & _POSITION_MASK)
        chunk = chunks[ci]
        i = bisect_left(chunk, value & _POSITION_MASK)
        while chunk[i] != value:  # past the points of smaller ids at the same position
            i += 1
            if i == len(chunk):
                ci, i = ci + 1, 0
                chunk = chunks[ci]
        del chunk[i]
        self._size -= 1
        if not chunk:
            del chunks[ci], maxes[ci]
            return
        if i == len(chunk):
            maxes[ci] = chunk[-1]
        if len(chunk) < CHUNK // 4 and ci + 1 < len(chunks) and len(chunks[ci + 1]) <= CHUNK:
            chunk.extend(chunks[ci + 1])
            del chunks[ci + 1]
            maxes[ci : ci + 2] = [chunk[-1]]

    def _normalize_cursor(self) -> None:
        chunks = self._chunks
        if self._cursor_chunk >= len(chunks):
            self._cursor_chunk, self._cursor = 0, 0
        elif self._cursor >= len(chunks[self._cursor_chunk]):
            self._cursor = 0
            self._cursor_chunk = (
                self._cursor_chunk + 1 if self._cursor_chunk + 1 < len(chunks) else 0
            )

    # -- load (bounded_load only) ------------------------------------------------------------

    def on_acquire(self, backend: Backend) -> None:
        slot = self._held.get(backend)
        if slot is not None:
            self._active[slot] += 1
            self._load += 1

    def on_release(self, backend: Backend) -> None:
        slot = self._held.get(backend)
        if slot is not None:
            self._active[slot] -= 1
            self._load -= 1

    # -- picking ----------------------------------------------------------------------------

    def pick(self, key: bytes | None) -> Backend | None:
        if not self._size:
            return None
        chunks = self._chunks
        if key is None:
            ci = self._cursor_chunk
            i = self._cursor
            chunk = chunks[ci]
            if i + 1 < len(chunk):
                self._cursor = i + 1
            else:
                self._cursor = 0
                self._cursor_chunk = ci + 1 if ci + 1 < len(chunks) else 0
        else:
            position = xxh3_64_intdigest(key) & _POSITION_MASK
            ci = bisect_left(self._maxes, position)
            if ci == len(chunks):
                ci = i = 0
                chunk = chunks[0]
            else:
                chunk = chunks[ci]
                i = bisect_left(chunk, position)
        owner = chunk[i] & _OWNER_MASK
        # An idle backend is always within its bound (the bound is >= 1).
        bound = self._bound
        if bound is None or not self._active[owner]:
            return self._slots[owner]
        return self._walk(ci, i, bound)

    def _walk(self, ci: int, i: int, bound: float) -> Backend | None:
        """Bounded loads: walk clockwise from point ``i`` of chunk ``ci`` to the first backend
        under its bound."""
        active = self._active
        weights = self._weights
        chunks = self._chunks
        chunk = chunks[ci]
        first = chunk[i] & _OWNER_MASK
        per_weight = bound * (self._load + 1) / self._total_weight
        for _ in range(self._size):
            owner = chunk[i] & _OWNER_MASK
            if active[owner] < ceil(per_weight * weights[owner]):
                return self._slots[owner]
            i += 1
            if i == len(chunk):
                ci = ci + 1 if ci + 1 < len(chunks) else 0
                chunk = chunks[ci]
                i = 0
        # Unreachable while c >= 1 and the counts add up; keep the affinity.
        return self._slots[first]


def _id(slots: list[Backend | None], value: int) -> str:
    owner = slots[value & _OWNER_MASK]
    assert owner is not None
    return owner.id

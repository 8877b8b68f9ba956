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
orders as the integer does: a whole build sorts its points as doubles, which Python compares
several times faster than 64-bit integers, with no Python code run per point.

The ring is kept as a list of sorted chunks of at most ``2 * CHUNK`` points (``array('Q')``,
8 bytes a point) with the last point of each in ``maxes`` (an ``array('Q')`` too), as
``sortedcontainers`` does: a lookup is a binary search of ``maxes`` and one of a chunk (both
in C: ``_find``), and adding or
removing one backend inserts or deletes its ~160 points, each a short ``memmove`` in one chunk,
instead of re-sorting the ring. ``update`` applies only what changed (``Roster``): a new or
returning backend adds its points, one that leaves removes them, a weight change adds or removes
the points past the smaller count (in slices when they are many: "Changes in slices"). A
first update, or one that changes more than a quarter of the backends, builds the whole ring
(below). Each backend's point positions are cached while it is in the pool (eligible or not),
so it never hashes twice.

Whole builds
------------
A whole build numbers the slots in ``id`` order (so that sorting the packed points orders equal
positions by id), then hashes the backends' points and sorts them in batches of
``BATCH_POINTS``, each cut at fixed positions into ``RANGE_POINTS``-sized ranges; then sorts
each range's pieces together and cuts it into chunks. Every unit of that work is a few
milliseconds, so the build can stop at a deadline and go on later. The ring it gives is the
one its definition gives (a unit test builds that one point at a time and compares).

At 10,000 backends the hashing alone is 1.6 million SHAKE-128 words per unit of weight: a
second or more of CPU, far above the 10 ms a control-plane change may block a worker's loop
(issue 17). So when the process has a scheduler for long work (``lb.balancing.background``:
a worker installs one on its loop), a build that is not done within ``INLINE_S`` goes on in
slices of about 2 ms, one per loop iteration, between the I/O; without one (tests, a strategy
used on its own) the build is done at once. The setup of a big first build (numbering the
slots, the pick structures: a few milliseconds at 10,000 backends) is a slice of its own too,
after the ``update`` that takes the list (the roster's diff: as much again): the strategy had
nothing to pick from, so nothing is lost by waiting; a pick that comes first does the setup
at once (``_starting``). While a build goes on:

* picks come from a *provisional table*: the backends in slot order with their cumulative
  weights, a key going to the backend whose share of the total weight holds ``xxh3_64(key)``.
  It is weighted, O(log n) and consistent (a key stays on its backend for the whole build),
  but it is not the ring: keys move once more when the build is done. That is the price of
  not blocking; the other choice, holding requests until the ring is built, would add up to a
  few seconds of latency to every request of the pool. Bounded loads apply to it as to the
  ring (the walk goes to the next backend of the table), and keyless picks draw their
  position from a counter;
* a change (``update``) changes the pick structures only (slots, weights, counts: a backend
  that leaves is passed over, one that joins waits for the ring), and the ring catches up when
  the build is done: each backend changed meanwhile has its points moved as after a single
  change ("Changes in slices"). A change of more than a quarter of the backends starts the
  build again (the cached points are kept). A slot is not reused during a build, since the
  build's points name their owners by slot.

A strategy replaced before its build is done (a reload that changes ``vnodes``) is dropped
with its build: the scheduler holds it weakly.

Changes in slices
-----------------
A change that is not a whole build moves points one at a time, a few microseconds each (a
binary search and a ``memmove`` in a chunk of a ring that does not fit the CPU's caches): six
backends of weight 1 to 7 at 10,000 backends are about 3,000 points, 10 to 25 ms. So
``update`` changes the pick structures at once (slots, weights, loads), notes each backend
changed as *behind* (with the slot its points on the ring carry), and moves points for
``INLINE_S``; with a scheduler, the rest goes on in slices, ``MOVE_POINTS`` points between two
looks at the clock (without one, at once). Every removal comes before any insertion. While
points remain to move:

* a point whose slot no backend holds (its backend left) is passed over, to the next point
  clockwise, which is where the key goes once the point is removed; a backend that joined
  gets keys as its points are inserted, and only those keys move (onto it). Every pick is an
  eligible backend, and the ring is at each moment a mix of the old one and the new one;
* a slot is not reused while points on the ring carry it.

The ring at the end is the one a build of the same backends gives (a unit test interleaves
changes and slices at random, and compares).

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
import itertools
import math
import operator
import sys
import time
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from hashlib import shake_128
from math import ceil

from xxhash import xxh3_64_intdigest

from lb.balancing import background
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
#: A whole build of at most this many points is done at once, even with a scheduler; a
#: bigger one too if it ends within INLINE_S seconds, else it goes on in slices.
SYNC_POINTS = 1 << 13
INLINE_S = 0.002
INLINE_POINTS = 1 << 15
#: Points moved between two looks at the clock after a change (a power of two).
MOVE_POINTS = 32
#: Points sorted together in a build's first phase, and per range in its second.
BATCH_POINTS = 1 << 13
RANGE_POINTS = 1 << 13

_MASK64 = (1 << 64) - 1
_INV53 = 2.0**-53
_id_of = operator.attrgetter("id")
_weight_of = operator.attrgetter("effective_weight")
_active_of = operator.attrgetter("active")

_ORDER = sys.byteorder  # arrays hold native words; the hash's bytes are read little-endian
_POSITION_WORD = int(_POSITION_MASK).to_bytes(8, _ORDER)


#: This module runs compiled (``consistent_hash.pxd``), not from its ``.py``: see ``_find``.
_COMPILED = not __file__.endswith(".py")


def _find(words: array[int], position: int) -> int:
    """``bisect_left(words, position)``: which chunk of the ring a key's position goes in
    (``words`` is ``maxes``), then where in that chunk. In plain Python, ``bisect``, in C (a
    loop in Python would be the slower one there). Compiled, a search over the array's 64-bit
    words read in place as C integers (``bisect`` makes a Python int of every word it
    compares, and a typed memoryview acquires the buffer per call: each was most of a pick's
    cost). The ring's words are hashes, spread evenly, so the search starts where the
    position's place between the first and the last word says (off by about the square root
    of the length), gallops outward to bracket it, and bisects the bracket: a few cache lines
    of a chunk instead of a dozen far apart, which is what a pick costs when the ring does not
    fit the CPU's caches (10,000 backends). It gives ``bisect``'s index, whatever the words."""
    if not _COMPILED:
        return bisect_left(words, position)
    data = words.data.as_ulonglongs  # type: ignore[attr-defined]  # (compiled: the words)
    n = len(words)
    lo = 0
    hi = n
    if n > 8:
        first = data[0]
        last = data[n - 1]
        if position <= first:
            return 0
        if position > last:
            return n
        # Every word before lo is < position, every word from hi on is >= it.
        guess = int((position - first) / (last - first) * (n - 1))
        guess = min(max(guess, 0), n - 1)
        step = 1
        if data[guess] < position:
            lo = guess + 1
            while lo + step - 1 < n and data[lo + step - 1] < position:
                lo += step
                step <<= 1
            hi = min(lo + step - 1, n)
        else:
            hi = guess
            while hi - step >= 0 and data[hi - step] >= position:
                hi -= step
                step <<= 1
            lo = max(hi - step + 1, 0)
    while lo < hi:
        mid = (lo + hi) >> 1
        if data[mid] < position:
            lo = mid + 1
        else:
            hi = mid
    return lo


def _owner_at(chunk: array[int], i: int) -> int:
    """The slot of the owner of point ``i`` of a chunk (compiled: the word read in place, not
    made a Python int)."""
    if not _COMPILED:
        return chunk[i] & _OWNER_MASK
    if not 0 <= i < len(chunk):
        raise IndexError("ring point index out of range")
    data = chunk.data.as_ulonglongs  # type: ignore[attr-defined]  # (compiled: the words)
    return int(data[i] & _OWNER_MASK)


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


class _Build:
    """A whole ring in the making (see "First builds" in the module docstring).

    ``order`` are the eligible backends when it started, in ``id`` order: backend ``i`` owns
    slot ``i``, so a sort of the packed points orders equal positions by id. The points are
    made in batches of about ``BATCH_POINTS``; each batch is packed, sorted (as doubles, in
    C) and cut at ``ranges`` fixed positions into ``pieces``. Then each range's pieces are
    sorted together (runs: timsort merges them) and cut into chunks. Every unit of work is
    small, so that the work can stop at a deadline and go on later."""

    __slots__ = (
        "bounds",
        "chunks",
        "counts",
        "ids",
        "maxes",
        "next",
        "order",
        "owners",
        "pending",
        "pending_points",
        "pieces",
        "prepared",
        "range",
        "size",
        "weights",
    )

    def __init__(self, order: list[Backend], ids: list[str], weights: list[float]) -> None:
        self.order = order
        self.ids = ids
        self.weights = weights
        # Made by prepare(), in the first slice: what the loop need not wait for.
        self.counts: list[int] = []
        self.bounds = array("d")
        self.pieces: list[bytearray] = []
        self.next = 0  # the next backend to hash
        self.pending: list[bytes] = []  # hashed, not yet sorted: positions ...
        self.owners: list[bytes] = []  # ... and their owners' slots
        self.pending_points = 0
        self.range = 0  # the next range to merge
        self.chunks: list[array[int]] = []
        self.maxes = array("Q")
        self.size = 0
        self.prepared = False

    def prepare(self, vnodes: int) -> None:
        """Each backend's number of points, and the ranges."""
        weights = self.weights
        # point_count() of each: computed once per distinct weight (a pool has few).
        per_weight = {w: max(1, round(vnodes * w)) for w in set(weights)}
        self.counts = counts = list(map(per_weight.__getitem__, weights))
        total = sum(counts)
        ranges = 1
        while ranges * RANGE_POINTS < total and ranges < 1 << 16:
            ranges *= 2
        step = 1 << (62 - ranges.bit_length() + 1)
        # The first packed value of each range after the first, read as a double.
        self.bounds = array("d", array("Q", [r * step for r in range(1, ranges)]).tobytes())
        # Per range, the batches' sorted points in it, one run after another (doubles' bytes,
        # in a bytearray: a list of a piece per batch made hundreds of thousands of objects
        # in lists that a young garbage collection went through, 6 ms at 10,000 backends).
        self.pieces = [bytearray() for _ in range(ranges)]
        self.prepared = True


class ConsistentHash:
    """A ring with ``vnodes`` points per unit of weight; see the module docstring."""

    needs_key = True  # picks by the hash key

    # No ``__slots__``: compiled, the ``.pxd`` gives the layout (a C class), with the
    # ``__weakref__`` the scheduler needs (it holds ``_step`` weakly), which a slot list could
    # not declare there; in plain Python there is one of these per pool, so a ``__dict__``
    # costs nothing that matters.

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
        self._maxes = array("Q")
        self._size = 0
        self._cursor_chunk = 0
        self._cursor = 0
        # id -> its point positions as native 64-bit words: bytes, which the garbage collector
        # does not track (10,000 arrays would make every full collection longer).
        self._cache: dict[str, bytes] = {}
        # A first build in slices (see the module docstring): the build, whether a scheduler
        # runs it, the ids changed since it started, and the provisional table picks use
        # until it is done (cumulative weights by slot), with its keyless counter.
        self._build: _Build | None = None
        self._scheduled = False
        self._dirty: set[str] = set()
        self._cumulative: list[float] = []
        self._spin = 0
        # A big first build set to start in the next slice (or at the first pick, whichever
        # comes first): see "Whole builds".
        self._starting = False
        # Ring points still to move after a change (see "Changes in slices"): id -> the slot
        # its points on the ring carry (-1: it has none).
        self._behind: dict[str, int] = {}

    # -- membership -------------------------------------------------------------------------

    def update(self, backends: Sequence[Backend]) -> None:
        roster = self._roster
        changes = roster.diff(backends)
        if not changes:
            return
        if len(roster.members) > MAX_BACKENDS:
            raise ValueError(f"consistent_hash supports at most {MAX_BACKENDS} eligible backends")
        if self._starting:
            return  # the build starts from the roster as it is then
        if changes.size * 4 > max(len(roster.members), 32):
            self._total_weight = sum(roster.weights.values())
            schedule = background.scheduler()
            if (
                schedule is not None
                and not self._held
                and self._build is None
                and self._vnodes * self._total_weight > INLINE_POINTS
            ):
                # A big first build: nothing to pick from until now, so the setup (sort,
                # slot tables) can wait for a slice of its own, or for the first pick.
                self._starting = True
                if not self._scheduled:
                    self._scheduled = True
                    schedule(self._step)
                return
            self._start_build()
            return
        for b in changes.left:
            self._leave(b)
        for old, new in changes.changed:
            self._change(old, new)
        for b in changes.joined:
            self._join(b)
        self._total_weight = sum(roster.weights.values())
        if self._build is None:
            self._settle_soon()

    def dismantle(self, deadline: float) -> bool:
        """Free the ring a part at a time (a ``background.Step``, for a strategy a reload
        replaced): the ring and the points of 10,000 backends take about 9 ms to free in one
        go. Ends any build or change in progress. True: more remains."""
        self._build, self._starting, self._behind, self._dirty = None, False, {}, set()
        chunks, maxes, cache = self._chunks, self._maxes, self._cache
        self._size = 0
        while chunks or cache:
            del chunks[-256:], maxes[-256:]
            for _ in range(min(len(cache), 512)):
                cache.popitem()
            if time.perf_counter() > deadline:
                return True
        return False

    @property
    def building(self) -> bool:
        """A first build is under way: picks use the provisional table until it is done."""
        return self._build is not None or self._starting

    @property
    def settling(self) -> bool:
        """Work remains for the scheduler: a build, or ring points still to move."""
        return self._build is not None or self._starting or bool(self._behind)

    def point_count(self, backend: Backend) -> int:
        """How many ring points a backend gets at its current effective weight."""
        return max(1, round(self._vnodes * backend.effective_weight))

    def _words(self, backend_id: str, count: int) -> bytes:
        """The first ``count`` point positions of a backend, as native words (cached: each
        is hashed once while the backend is in the pool)."""
        words = self._cache.get(backend_id)
        if words is None:
            words = self._cache[backend_id] = point_positions(backend_id, 0, count).tobytes()
        elif len(words) < 8 * count:
            more = point_positions(backend_id, len(words) // 8, count).tobytes()
            words = self._cache[backend_id] = words + more
        return words if len(words) == 8 * count else words[: 8 * count]

    def _positions(self, backend_id: str, start: int, stop: int) -> array[int]:
        """Positions ``start .. stop - 1`` of a backend, sorted (for single inserts)."""
        if stop <= start:
            return array("Q")
        return array("Q", sorted(array("Q", self._words(backend_id, stop)[8 * start :])))

    def _prune_cache(self) -> None:
        """Forget the points of backends no longer in the pool (eligible or not)."""
        cache, rank = self._cache, self._roster.rank
        if len(cache) > len(rank):
            for gone in cache.keys() - rank.keys():
                del cache[gone]

    # -- whole builds -----------------------------------------------------------------------

    def _start_build(self) -> None:
        """Build the whole ring afresh: at once when it is small or no scheduler runs in this
        process, else in slices (``lb.balancing.background``), with the provisional table
        answering picks meanwhile. The slots are renumbered in ``id`` order here, and the
        pick structures follow them at once."""
        self._starting = False
        self._total_weight = sum(self._roster.weights.values())
        order = sorted(self._roster.members.values(), key=_id_of)
        ids = list(map(_id_of, order))
        weights = list(map(_weight_of, order))
        self._build = _Build(order, ids, weights)
        self._slots = list(order)
        self._weights = array("d", weights)
        self._active = list(map(_active_of, order))
        self._free = []
        self._slot_of = dict(zip(ids, range(len(order)), strict=True))
        self._held = dict(zip(order, range(len(order)), strict=True))
        self._load = sum(self._active)
        self._counts = {}
        self._chunks, self._maxes, self._size = [], array("Q"), 0
        self._dirty = set()
        self._behind = {}
        schedule = background.scheduler()
        points = self._vnodes * sum(weights)  # about (each count is rounded)
        if schedule is None or points <= SYNC_POINTS:
            self._step(math.inf)
            return
        # A build that ends within INLINE_S is done at once: the ring is exact from the start.
        # (One much bigger than that is not even tried.)
        if points <= INLINE_POINTS and not self._step(time.perf_counter() + INLINE_S):
            return
        self._cumulative = list(itertools.accumulate(weights))
        if not self._scheduled:
            self._scheduled = True
            schedule(self._step)

    def _step(self, deadline: float) -> bool:
        """Work on the build, then on the points still to move, until ``deadline``; True: more
        remains (``background.Step``)."""
        if self._starting:
            self._start_build()
            return True  # the setup was this slice's work
        build = self._build
        if build is not None:
            if self._advance(build, deadline):
                return True
            self._finish(build)
        if self._behind and self._catch_up(deadline):
            return True
        self._scheduled = False
        return False

    def _advance(self, build: _Build, deadline: float) -> bool:
        if not build.prepared:
            build.prepare(self._vnodes)
            if time.perf_counter() > deadline:
                return True
        order, counts, clock = build.order, build.counts, time.perf_counter
        n = len(order)
        while build.next < n:
            i = build.next
            count = counts[i]
            build.pending.append(self._words(order[i].id, count))
            build.owners.append(i.to_bytes(8, _ORDER) * count)
            build.pending_points += count
            build.next = i + 1
            if build.pending_points >= BATCH_POINTS or build.next == n:
                self._sort_batch(build)
            if clock() > deadline:
                return True
        pieces = build.pieces
        while build.range < len(pieces):
            self._merge_range(build, pieces[build.range])
            pieces[build.range] = bytearray()
            build.range += 1
            if build.range < len(pieces) and clock() > deadline:
                return True
        return False

    @staticmethod
    def _sort_batch(build: _Build) -> None:
        """Pack the pending points with their owners (one big-integer ``|``), sort them as
        doubles (ordered as the words are, see ``_POSITION_MASK``) and cut them by range."""
        words = b"".join(build.pending)
        packed = int.from_bytes(words, _ORDER) | int.from_bytes(b"".join(build.owners), _ORDER)
        run = array("d", sorted(array("d", packed.to_bytes(len(words), _ORDER))))
        raw = memoryview(run).cast("B")
        build.pending, build.owners, build.pending_points = [], [], 0
        lo = 0
        for r, bound in enumerate(build.bounds):
            hi = bisect_left(run, bound, lo)
            if hi > lo:
                build.pieces[r] += raw[8 * lo : 8 * hi]
            lo = hi
        if lo < len(run):
            build.pieces[-1] += raw[8 * lo :]

    @staticmethod
    def _merge_range(build: _Build, pieces: bytearray) -> None:
        if not pieces:
            return
        ring = array("Q", array("d", sorted(array("d", pieces))).tobytes())
        for i in range(0, len(ring), CHUNK):
            chunk = ring[i : i + CHUNK]
            build.chunks.append(chunk)
            build.maxes.append(chunk[-1])
        build.size += len(ring)

    def _finish(self, build: _Build) -> None:
        """The build is done: it becomes the ring, and the backends changed since it started
        (``_dirty``) have their points moved as after any change (``_catch_up``)."""
        self._build = None
        self._cumulative = []
        self._chunks, self._maxes, self._size = build.chunks, build.maxes, build.size
        self._counts = dict(zip(build.ids, build.counts, strict=True))
        dirty, self._dirty = self._dirty, set()
        if dirty:
            built = dict(zip(build.ids, range(len(build.ids)), strict=True))
            self._behind = {backend_id: built.get(backend_id, -1) for backend_id in dirty}
        # A slot is free when no backend holds it and no point on the ring carries it.
        carrying = set(self._behind.values())
        slots = self._slots
        self._free = [s for s in range(len(slots)) if slots[s] is None and s not in carrying]
        self._normalize_cursor()
        if not self._behind:
            self._prune_cache()

    # -- single changes ---------------------------------------------------------------------
    # These change the pick structures at once (slots, weights, loads) and note the backend
    # as behind: its points move on the ring in ``_catch_up``, at once or in slices (see
    # "Changes in slices"). During a build they are noted in ``_dirty`` instead, and the
    # ring being built catches up when it is done (``_finish``). A slot is not reused during
    # a build (the build's points name their owners by slot), nor while points on the ring
    # still carry it (it is freed when the last one is removed).

    def _join(self, b: Backend) -> None:
        building = self._build is not None
        slot = self._free.pop() if self._free and not building else len(self._slots)
        if slot == len(self._slots):
            self._slots.append(b)
            self._weights.append(b.effective_weight)
            self._active.append(b.active)
        else:
            self._slots[slot] = b
            self._weights[slot] = b.effective_weight
            self._active[slot] = b.active
        self._slot_of[b.id] = slot
        self._held[b] = slot
        self._load += b.active
        if building:
            self._dirty.add(b.id)
        else:
            self._behind.setdefault(b.id, slot)

    def _leave(self, b: Backend) -> None:
        slot = self._slot_of.pop(b.id)
        self._slots[slot] = None
        del self._held[b]
        self._load -= self._active[slot]
        self._active[slot] = 0
        if self._build is not None:
            self._dirty.add(b.id)
        else:
            self._behind.setdefault(b.id, slot)

    def _change(self, old: Backend, new: Backend) -> None:
        slot = self._slot_of[new.id]
        self._slots[slot] = new
        self._weights[slot] = new.effective_weight
        del self._held[old]
        self._held[new] = slot
        self._load += new.active - self._active[slot]
        self._active[slot] = new.active
        if self._build is not None:
            self._dirty.add(new.id)
        else:
            self._behind.setdefault(new.id, slot)

    # -- changes in slices ------------------------------------------------------------------

    def _settle_soon(self) -> None:
        """Move the points of the backends behind: at once without a scheduler, else for
        ``INLINE_S`` now and the rest in slices."""
        if not self._behind:
            self._normalize_cursor()
            self._prune_cache()
            return
        schedule = background.scheduler()
        if schedule is None:
            self._catch_up(math.inf)
            return
        if self._catch_up(time.perf_counter() + INLINE_S) and not self._scheduled:
            self._scheduled = True
            schedule(self._step)

    def _catch_up(self, deadline: float) -> bool:
        """Move points until every backend behind has the points it should have, or until
        ``deadline``; True: more remains. Every removal comes before any insertion, so that
        no point of a slot that was left is on the ring when a point is inserted (equal
        positions are ordered by their owners' ids, which such a point no longer has)."""
        behind = self._behind
        for inserting in (False, True):
            for backend_id in list(behind):
                if self._settle(backend_id, inserting, deadline):
                    self._normalize_cursor()
                    return True
        slots = self._slots
        self._free = [s for s in range(len(slots)) if slots[s] is None]
        self._normalize_cursor()
        self._prune_cache()
        return False

    def _settle(self, backend_id: str, inserting: bool, deadline: float) -> bool:
        """Move one backend's points toward what it should have: its surplus (all of them if
        it left, or holds another slot now) when not ``inserting``, what it lacks when
        ``inserting``. True: ``deadline`` passed first."""
        carried = self._behind[backend_id]
        have = self._counts.get(backend_id, 0)
        slot = self._slot_of.get(backend_id)
        b = None if slot is None else self._slots[slot]
        want = 0 if b is None else self.point_count(b)
        clock, mask = time.perf_counter, MOVE_POINTS - 1
        if not inserting:
            keep = want if slot == carried else 0
            if have <= keep:
                return False
            points = array("Q", self._words(backend_id, have))
            i = have
            while i > keep:
                i -= 1
                self._remove(points[i] | carried)
                if not i & mask and clock() > deadline:
                    break
            if i:
                self._counts[backend_id] = i
            else:
                del self._counts[backend_id]
                if self._slots[carried] is None:
                    self._free.append(carried)  # no point carries it any more
            return i > keep
        # Every surplus is gone: the points it has (if any) carry its slot.
        if slot is not None and have < want:
            points = array("Q", self._words(backend_id, want))
            i = have
            while i < want:
                self._insert(points[i], slot, backend_id)
                i += 1
                if not i & mask and clock() > deadline:
                    break
            self._counts[backend_id] = i
            if i < want:
                self._behind[backend_id] = slot
                return True
        del self._behind[backend_id]
        return False

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
            maxes[ci : ci + 1] = array("Q", (chunk[half - 1], chunk[-1]))

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
            maxes[ci : ci + 2] = array("Q", (chunk[-1],))

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
            return self._unplaced(key)
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
            position = xxh3_64_intdigest(key)
            position &= _POSITION_MASK
            ci = _find(self._maxes, position)
            if ci == len(chunks):
                ci = i = 0
                chunk = chunks[0]
            else:
                chunk = chunks[ci]
                i = _find(chunk, position)
        owner = _owner_at(chunk, i)
        b = self._slots[owner]
        # An idle backend is always within its bound (the bound is >= 1).
        bound = self._bound
        if b is not None and (bound is None or not self._active[owner]):
            return b
        return self._walk(ci, i, bound, key)

    def _walk(self, ci: int, i: int, bound: float | None, key: bytes | None) -> Backend | None:
        """Walk clockwise from point ``i`` of chunk ``ci`` to the first backend under its bound
        (bounded loads), passing over the points of backends that left whose points are still
        to be removed (``_catch_up``)."""
        active = self._active
        weights = self._weights
        slots = self._slots
        chunks = self._chunks
        chunk = chunks[ci]
        first = None
        total = self._total_weight or 1.0  # 0: every backend left (points still to remove)
        per_weight = 0.0 if bound is None else bound * (self._load + 1) / total
        for _ in range(self._size):
            owner = _owner_at(chunk, i)
            b = slots[owner]
            if b is not None:
                if bound is None or active[owner] < ceil(per_weight * weights[owner]):
                    return b
                if first is None:
                    first = b
            i += 1
            if i == len(chunk):
                ci = ci + 1 if ci + 1 < len(chunks) else 0
                chunk = chunks[ci]
                i = 0
        # Unreachable while c >= 1 and the counts add up; keep the affinity.
        return first if first is not None else self._unplaced(key)

    def _unplaced(self, key: bytes | None) -> Backend | None:
        """A pick when no point on the ring names an eligible backend: a first build under
        way (the provisional table; one set to start starts now, since a pick needs it), or
        the moment a change takes to move points (every point left is one still to remove,
        those of the backends that joined are still to insert). None when none is eligible."""
        if self._starting:
            self._start_build()
        if self._build is not None:
            return self._provisional(key)
        return next(iter(self._held), None)

    def _provisional(self, key: bytes | None) -> Backend | None:
        """A pick while a first build is under way: the key's place in the cumulative weights
        of the backends in ``id`` order (the slots the build numbered), so that keys spread by
        weight and a key keeps its backend until the ring is done. A backend that left since
        is passed over, to the next in the table, as are those above their bound."""
        table = self._cumulative
        slots = self._slots
        n = len(table)
        if not n:
            return None
        if key is None:
            self._spin = spin = (self._spin + 0x9E3779B97F4A7C15) & _MASK64
            h = spin
        else:
            h = xxh3_64_intdigest(key)
        i = bisect_right(table, (h >> 11) * _INV53 * table[-1])
        if i >= n:
            i = n - 1
        bound = self._bound
        total = self._total_weight or 1.0  # 0: every backend left (all slots are None)
        per_weight = 0.0 if bound is None else bound * (self._load + 1) / total
        first = None
        active, weights = self._active, self._weights
        for _ in range(n):
            b = slots[i]
            if b is not None:
                if bound is None or active[i] < ceil(per_weight * weights[i]):
                    return b
                if first is None:
                    first = b
            i = i + 1 if i + 1 < n else 0
        return first


def _id(slots: list[Backend | None], value: int) -> str:
    owner = slots[value & _OWNER_MASK]
    assert owner is not None
    return owner.id

"""Least connections, weighted: the backend with the smallest ``active / effective_weight``.

Owns: the eligible backends kept in buckets by load. Never does: I/O, or count connections
itself: ``active`` is kept by the pool, which tells this strategy of every change through the
``on_acquire``/``on_release`` hooks (``tracks_load``, see ``lb.balancing.base.LoadTracking``).

Theory of operation
-------------------
A backend's load is ``active / effective_weight`` (a float division; equal fractions give equal
floats, so backends with equal loads are exactly tied). Backends sit in buckets, one per load
value: an ``OrderedDict`` used as an ordered set. A heap holds the load of every bucket, so the
least loaded bucket is the top of the heap. Buckets that empty stay (and keep their heap entry)
until they reach the top, where ``pick`` drops them: every bucket has exactly one heap entry.

* ``pick`` takes the first backend of the least loaded bucket and moves it to the bucket's end:
  equal loads take turns (round-robin ties), also when picks do not change loads (a backend at
  its limit, a benchmark). O(1), plus O(log b) for each empty bucket it drops (b: buckets).
* ``on_acquire``/``on_release`` move the backend to the end of its new load's bucket, as
  HAProxy's ``fwlc`` re-queues a server behind the others of equal key in its tree. O(1), or
  O(log b) when the bucket is new.
* ``update`` applies only what changed (``Roster``): a new backend joins the end of its bucket,
  a leaving one is removed, a weight change moves it. The first update fills the buckets in the
  pool's order, so an idle pool is served in that order.

The order of equally loaded backends is the order in which they reached that load (or were last
picked at it): a backend that just finished a request queues behind the ones that were idle.

Compiled (``least_conn.pxd``): the hooks and ``pick`` run per request, so reading a backend's
``active`` and its place (``_Place``: its bucket and its weight) are C struct loads.
"""

from __future__ import annotations

import itertools
import operator
from collections import OrderedDict
from collections.abc import Sequence
from heapq import heappop, heappush

from lb.balancing.options import StrategyOptions
from lb.balancing.roster import Roster
from lb.model import Backend

_weight_of = operator.attrgetter("effective_weight")
_active_of = operator.attrgetter("active")


class _Place:
    """Where a held backend sits: its ``bucket`` (so that a move finds it without a lookup by
    load) and its effective ``weight`` (compiled: a C double)."""

    __slots__ = ("bucket", "weight")

    def __init__(self, bucket: OrderedDict[Backend, None], weight: float) -> None:
        self.bucket = bucket
        self.weight = weight


class LeastConn:
    """Minimum ``active / effective_weight``; equal loads take turns."""

    needs_key = False  # ignores the hash key
    tracks_load = True  # the pool calls on_acquire/on_release

    __slots__ = ("_buckets", "_held", "_loads", "_roster")

    def __init__(self, options: StrategyOptions) -> None:
        self._roster = Roster()
        # Held backend -> its bucket and its effective weight.
        self._held: dict[Backend, _Place] = {}
        self._buckets: dict[float, OrderedDict[Backend, None]] = {}
        self._loads: list[float] = []  # heap: one entry per bucket

    def update(self, backends: Sequence[Backend]) -> None:
        changes = self._roster.diff(backends)
        for b in changes.left:
            self._leave(b)
        for old, new in changes.changed:
            self._leave(old)
            self._join(new)
        if not self._held and len(changes.joined) > 1:
            self._join_all(changes.joined)
        else:
            for b in changes.joined:
                self._join(b)

    def _join_all(self, joined: list[Backend]) -> None:
        """The first members (10,000 at a worker's start) in bulk: what ``_join`` does for
        each, in C where it can. An idle pool (all loads 0) fills one bucket at once."""
        weights = list(map(_weight_of, joined))
        loads = list(map(operator.truediv, map(_active_of, joined), weights))
        held = self._held
        if loads.count(loads[0]) == len(loads):
            bucket = self._bucket(loads[0])
            bucket.update(dict.fromkeys(joined))
            held.update(zip(joined, map(_Place, itertools.repeat(bucket), weights), strict=True))
            return
        for b, load, weight in zip(joined, loads, weights, strict=True):
            bucket = self._bucket(load)
            bucket[b] = None
            held[b] = _Place(bucket, weight)

    def _join(self, b: Backend) -> None:
        weight = b.effective_weight
        bucket = self._bucket(b.active / weight)
        bucket[b] = None
        self._held[b] = _Place(bucket, weight)

    def _leave(self, b: Backend) -> None:
        place = self._held.pop(b, None)
        if place is not None:
            del place.bucket[b]

    def _bucket(self, load: float) -> OrderedDict[Backend, None]:
        bucket = self._buckets.get(load)
        if bucket is None:
            bucket = self._buckets[load] = OrderedDict()
            heappush(self._loads, load)
        return bucket

    def on_acquire(self, backend: Backend) -> None:
        self._moved(backend)

    def on_release(self, backend: Backend) -> None:
        self._moved(backend)

    def _moved(self, b: Backend) -> None:
        place = self._held.get(b)
        if place is None:
            return  # not eligible here (draining, removed, replaced)
        del place.bucket[b]
        load = b.active / place.weight
        buckets = self._buckets
        bucket = buckets.get(load)
        if bucket is None:
            bucket = buckets[load] = OrderedDict()
            heappush(self._loads, load)
        bucket[b] = None
        place.bucket = bucket

    def pick(self, key: bytes | None) -> Backend | None:
        loads = self._loads
        buckets = self._buckets
        while loads:
            bucket = buckets[loads[0]]
            if bucket:
                b = next(iter(bucket))
                bucket.move_to_end(b)
                return b
            del buckets[heappop(loads)]
        return None

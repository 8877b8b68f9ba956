"""A worker's view of one pool: its backends, its strategy, how to pick with retries, the
per-backend limits and the queue, and the one place where a backend is taken and given back.

The supervisor is the source of truth for membership and states; ``apply`` takes what it sent.
Backend objects are updated in place so that connections holding one keep counting against it.

``acquire(backend)``/``release(backend)`` are the only code that changes ``Backend.active``,
for L4 connections and L7 requests alike. They are where the pool's in-flight count, the
``max_conn`` slots, the queue and "a draining backend is now idle in this worker" meet:

* **Limits.** A backend's ``max_conn`` (for the whole lb) is split between the workers,
  rounded up, each at least 1 (``worker_share``); ``Backend.limit`` is this worker's share.
  Picks skip a backend at its limit, whatever the strategy (the strategy's own pick first,
  then another pick, then a scan for the least loaded backend below its limit).
* **Queue.** When every eligible backend is at its limit, a request (or a tcp connection)
  waits in a FIFO queue, bounded by ``max_queue``, for at most ``queue_timeout``. When no
  backend is eligible at all, it is *held* the same way for at most ``hold_timeout`` (0: no
  hold, the caller answers 503 at once). A freed slot (``release``) or a backend becoming
  eligible (``apply_*``) goes to the oldest waiter at once (``_wake``). The waiter owns its
  timer and calls ``expire`` or ``leave``; the pool only keeps the order.
* **Idle.** When a backend that is no longer ``ready`` has nothing left here, ``on_idle`` says
  so (the worker tells the supervisor promptly: a drain finished in this worker).
* **Demand** (in flight + queued + held) is reported through ``on_demand`` at once when it
  rises above twice what was last reported (so when it leaves zero) and when a waiter leaves
  the queue unserved, and every second with the stats snapshot (``demand_reported``, which
  re-arms the threshold): the scaler hears about a burst at once, and a pool that goes 0, 1,
  0, 1 costs at most one report a second.
* **Retry budget** (Linkerd's ``retryRatio`` and ``minRetriesPerSecond``). Retries are allowed
  while they stay under ``retry_budget`` times the first tries plus ``retry_budget_min`` per
  second, over a window whose counts halve every ``BUDGET_WINDOW`` seconds
  (``retry_allowed``), so a pool whose backends all fail does not multiply its connection
  attempts.

No I/O here.
"""

from __future__ import annotations

import functools
import itertools
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

import xxhash

from lb.balancing import (
    StrategyOptions,
    background,
    create_strategy,
    needs_key,
    tracks_latency,
    tracks_load,
)
from lb.balancing.base import Strategy
from lb.balancing.roster import Members
from lb.config import PeakEwmaConfig, PoolConfig
from lb.histogram import LATENCY_BUCKETS, latency_bucket
from lb.model import AdminState, Backend
from lb.wire import BackendEntry, EntryColumns

log = logging.getLogger("lb.proxy.pool")

BUDGET_WINDOW = 10.0  # seconds: the retry budget's counts halve this often
#: A snapshot of at most this many entries is applied at once, even with a scheduler.
SNAPSHOT_INLINE = 512
#: Entries staged between two looks at the clock while a snapshot is applied in slices.
SNAPSHOT_BATCH = 64
#: Backends handed to the strategy per update while a big snapshot is applied in slices
#: (a strategy that builds in slices itself, ``building``, gets them all at once).
STRATEGY_CHUNK = 1024
_READY = AdminState.READY  # (a module constant: release reads it per request)


def sticky_token(backend_id: str) -> bytes:
    """The cookie value naming a backend: stable across workers and restarts, and opaque."""
    return xxhash.xxh64_hexdigest(backend_id.encode()).encode()[:12]


def worker_share(max_conn: int, workers: int) -> int:
    """One worker's share of a backend's ``max_conn``: rounded up, at least 1 (0: no limit).
    So N workers never exceed the limit by more than the rounding, N - 1 at most."""
    if max_conn <= 0:
        return 0
    return max(1, math.ceil(max_conn / max(1, workers)))


def strategy_options(config: PoolConfig) -> StrategyOptions:
    """What a pool's config says to its strategy's constructor."""
    ewma = config.peak_ewma or PeakEwmaConfig()
    return StrategyOptions(
        bounded_load=config.bounded_load,
        vnodes=config.vnodes,
        ewma_decay=ewma.decay,
        ewma_floor=ewma.floor,
        ewma_initial_rtt=ewma.initial_rtt,
        ewma_penalty=ewma.penalty,
        ewma_choices=ewma.choices,
    )


def _strategy_settings(config: PoolConfig) -> tuple[object, ...]:
    """What a pool's strategy is built from: a reload that keeps these keeps the strategy."""
    return (config.strategy, config.bounded_load, config.vnodes, config.peak_ewma)


class Waiter(Protocol):
    """A request (L7 ``Exchange``) or connection (L4) waiting in the queue."""

    key: bytes | None

    def granted(self, backend: Backend) -> None:
        """A slot is free: ``backend`` was acquired for the waiter, which must use it now."""

    def client_gone(self) -> bool:
        """Its client closed or reset the connection (seen without reading from it)."""

    def drop(self) -> None:
        """Close the client's connection; the waiter leaves the queue as it closes."""


SuccessReporter = Callable[[str, Backend, int], None]
IdleReporter = Callable[[Backend], None]
DemandReporter = Callable[["PoolRuntime"], None]


def _ignore_success(pool: str, backend: Backend, failures: int) -> None:
    """``on_success`` until a worker connects the pool to its bus."""


def _ignore_idle(backend: Backend) -> None:
    """``on_idle`` until a worker connects the pool to its bus."""


def _ignore_demand(pool: PoolRuntime) -> None:
    """``on_demand`` until a worker connects the pool to its bus."""


class PoolRuntime:
    __slots__ = (
        "_panic_next",
        "_snapshot",
        "attempts",
        "backends",
        "budget_exhausted",
        "budget_since",
        "by_token",
        "config",
        "eligible",
        "generation",
        "hold_timeouts",
        "idle_timeout",
        "in_flight",
        "key_kind",
        "key_name",
        "limited",
        "limits",
        "lineage",
        "max_idle",
        "max_requests",
        "name",
        "needs_key",
        "on_demand",
        "on_idle",
        "on_success",
        "panic_all",
        "queue",
        "queue_full",
        "queue_timeouts",
        "queue_wait",
        "queue_wait_sum",
        "report_5xx",
        "report_above",
        "retried",
        "retries",
        "send_proxy",
        "sticky_cookie",
        "strategy",
        "tracks_latency",
        "tracks_load",
        "waited",
        "waiting",
        "workers",
    )

    def __init__(self, name: str, config: PoolConfig, workers: int = 1) -> None:
        self.name = name
        self.config = config
        self.workers = workers
        self.strategy: Strategy = create_strategy(config.strategy, strategy_options(config))
        self.backends: dict[str, Backend] = {}
        # Called with (pool, backend, failures) when a backend succeeds after failing here.
        self.on_success: SuccessReporter = _ignore_success
        # Called when a backend that is not ``ready`` (draining) has no connection or request
        # left in this worker: the supervisor learns at once that it may be removable.
        self.on_idle: IdleReporter = _ignore_idle
        # Called when the demand rose enough to tell the scaler at once (see report_above).
        self.on_demand: DemandReporter = _ignore_demand
        self._panic_next = 0
        # A snapshot being applied in slices (apply_snapshot), or None.
        self._snapshot: _SnapshotJob | None = None
        # Sticky sessions (http): cookie value -> backend.
        self.by_token: dict[bytes, Backend] = {}
        self.limited = False  # some backend has a limit (picks check it)
        self.limits = 0  # backends with a limit (limited: limits > 0)
        self.eligible = 0  # eligible backends (0: requests are held, or refused)
        # The strategy's lists (lb.balancing.roster.Members): this pool's own lineage, and
        # how many it was given, so that a list can say what changed since the one before.
        self.lineage = object()
        self.generation = 0
        self.in_flight = 0  # acquired and not released: requests (http), connections (tcp)
        # Waiters, oldest first, with (the time they came, held: no backend was eligible).
        self.queue: OrderedDict[Waiter, tuple[float, bool]] = OrderedDict()
        self.waiting = 0  # len(queue), as a plain integer for the acquire/release checks
        # Demand is reported at once when in_flight + waiting goes above this.
        self.report_above = 0
        # Counters (totals of this worker): refused because the queue was full, timed out in
        # the queue, timed out while held, served after waiting, and the waits' histogram.
        self.queue_full = 0
        self.queue_timeouts = 0
        self.hold_timeouts = 0
        self.waited = 0
        self.queue_wait = [0] * LATENCY_BUCKETS
        self.queue_wait_sum = 0.0
        # Retry budget: tries (first tries and retries) and retries in the current window.
        self.attempts = 0
        self.retried = 0
        self.budget_since = time.monotonic()
        self.budget_exhausted = 0
        self._derive()

    def _derive(self) -> None:
        """Per-request decisions precomputed from the config (the L7 proxy reads these)."""
        config = self.config
        kind, _, name = config.hash_key.partition(":")
        self.key_kind = kind
        self.key_name = name.lower().encode()
        # The strategy says whether it hashes (a plugin that does not say gets a key).
        self.needs_key = needs_key(self.strategy)
        # The strategy keeps backends ordered by load: acquire/release tell it of each change.
        self.tracks_load = tracks_load(self.strategy)
        # The strategy scores by latency: the proxy hands it each answer's (on_latency).
        self.tracks_latency = tracks_latency(self.strategy)
        self.sticky_cookie = config.sticky_cookie.encode() if config.sticky_cookie else None
        self.report_5xx = config.passive is not None and config.passive.on_5xx
        # What the proxy reads of the config per request, as plain (compiled: C) fields.
        self.max_requests = config.upstream_max_requests
        self.max_idle = config.upstream_max_idle
        self.idle_timeout = config.upstream_idle_timeout
        self.retries = config.retries
        self.send_proxy = config.send_proxy
        self.panic_all = config.panic == "route_all"

    def sticky_header(self, backend: Backend) -> bytes:
        """The Set-Cookie line that pins a client to ``backend``."""
        assert self.sticky_cookie is not None
        return (
            b"Set-Cookie: "
            + self.sticky_cookie
            + b"="
            + sticky_token(backend.id)
            + b"; Path=/; HttpOnly\r\n"
        )

    # -- membership -------------------------------------------------------------------------

    def reconfigure(self, config: PoolConfig, workers: int | None = None) -> None:
        """A reload changed pool settings (or the worker count): keep the backends, and the
        strategy unless what it is built from changed (its name, ``bounded_load``,
        ``vnodes``, ``peak_ewma``): a new one starts its sequence afresh, and a ring of
        10,000 backends is built again; a new worker count changes every backend's share of
        its limit. A big pool's backends join the new strategy in slices, as a snapshot's
        added ones do (``_feed_anew``)."""
        if workers is not None and workers != self.workers:
            self.workers = workers
            for b in self.backends.values():
                b.limit = worker_share(b.max_conn, workers)
            self._refresh()
        if config != self.config:
            old, self.config = self.config, config
            if _strategy_settings(config) != _strategy_settings(old):
                retired = self.strategy
                self.strategy = create_strategy(config.strategy, strategy_options(config))
                self._feed_anew()
                retire_strategy(retired)
            self._derive()
            self._rebuild_tokens()
            self._wake()

    def apply_snapshot(
        self, entries: Iterable[BackendEntry], on_done: Callable[[], None] | None = None
    ) -> None:
        """The whole pool (a worker's start, a reload). Backends whose entry did not change
        are kept as they are (a reload of 10,000 unchanged backends changes nothing), changed
        ones are updated in place, and only what changed reaches the counts, the sticky
        tokens and the strategy.

        A big snapshot (more than ``SNAPSHOT_INLINE`` entries) is applied in slices when the
        process has a scheduler for long work (``lb.balancing.background``; a worker installs
        one), so that the worker's loop serves traffic in between: see ``_SnapshotJob``.
        Until it is done (``applying``) the pool serves from the set it had; ``on_done`` is
        called once it is whole. A newer snapshot supersedes one still in progress (its work
        is dropped, and its ``on_done`` never called). Without a scheduler, or for a small
        snapshot, it is applied at once and ``on_done`` is called before this returns."""
        # A decoded snapshot (wire.EntryColumns) makes its entries as they are read: in the
        # staging slices, not here in one go.
        kept = entries if isinstance(entries, tuple | EntryColumns) else tuple(entries)
        job = _SnapshotJob(self, kept, on_done)
        self._snapshot = job
        schedule = background.scheduler()
        if schedule is None or len(job.entries) <= SNAPSHOT_INLINE:
            while job.step(math.inf):
                pass
            return
        if job.step(time.perf_counter() + background.SLICE_S):
            schedule(job.step)

    def _feed_anew(self) -> None:
        """A new strategy takes every backend: in chunks, one per slice, as the backends a
        snapshot adds (``_SnapshotJob``, from its third part), when the pool is big and the
        process has a scheduler; at once otherwise, or while a snapshot is applied (which
        this must not supersede). Until the last chunk the new strategy picks among those
        it was given."""
        schedule = background.scheduler()
        if schedule is None or len(self.backends) <= SNAPSHOT_INLINE or self._snapshot is not None:
            self._update_strategy(None)
            return
        job = _SnapshotJob(self, (), None)
        job.committed = True
        job.pending = dict(self.backends)
        self._snapshot = job
        if job.step(time.perf_counter() + background.SLICE_S):
            schedule(job.step)

    @property
    def applying(self) -> bool:
        """A snapshot is being applied in slices (see ``apply_snapshot``)."""
        return self._snapshot is not None

    def _snapshot_done(self, job: _SnapshotJob) -> None:
        if self._snapshot is job:
            self._snapshot = None

    def apply_backend(self, entry: BackendEntry) -> None:
        """One backend added or changed (a runtime add, a state, weight or slow-start step):
        the counts and the sticky tokens follow that backend alone, so that a change costs
        the same at 10,000 backends as at 10 (the strategy's ``update`` aside)."""
        old = self.backends.get(entry.id)
        if old is not None:
            self._count(old, -1)
        b = self._upsert(entry)
        job = self._snapshot
        if job is not None and entry.id in job.pending:
            job.pending[entry.id] = b  # a new address: the new object is the one to feed
        self._count(b, 1)
        if old is not b and self.sticky_cookie is not None:
            self.by_token[sticky_token(b.id)] = b
        self._changed({b.id: b})

    def remove(self, backend_id: str) -> None:
        b = self.backends.pop(backend_id, None)
        if b is not None:
            job = self._snapshot
            if job is not None:
                job.pending.pop(backend_id, None)  # not to be fed to the strategy any more
            self._count(b, -1)
            if self.sticky_cookie is not None:
                token = sticky_token(backend_id)
                if self.by_token.get(token) is b:
                    del self.by_token[token]
            self._changed({backend_id: None})

    def _changed(self, touched: dict[str, Backend | None] | None) -> None:
        """``touched``: the backends changed (None: removed) since the strategy's last list,
        or None when unknown (a snapshot)."""
        self._update_strategy(touched)
        self._wake()

    def _update_strategy(self, touched: dict[str, Backend | None] | None) -> None:
        self.generation += 1
        self.strategy.update(
            Members(self.backends.values(), self.lineage, self.generation, touched)
        )

    def _count(self, b: Backend, sign: int) -> None:
        """Add (``sign`` 1) or take away (-1) what ``b`` adds to ``eligible`` and ``limited``."""
        if b.eligible:
            self.eligible += sign
        if b.limit:
            self.limits += sign
            self.limited = self.limits > 0

    def _refresh(self) -> None:
        """Count from scratch (a snapshot, a new worker count); single changes use _count."""
        backends = self.backends.values()
        self.limits = sum(1 for b in backends if b.limit)
        self.limited = self.limits > 0
        self.eligible = sum(1 for b in backends if b.eligible)

    def _rebuild_tokens(self) -> None:
        """Sticky cookie value -> backend, from scratch (a snapshot or a new config); single
        changes update the one entry. Empty without a sticky cookie."""
        if self.sticky_cookie is not None:
            self.by_token = {sticky_token(b.id): b for b in self.backends.values()}
        else:
            self.by_token = {}

    def _upsert(self, e: BackendEntry) -> Backend:
        b = self.backends.get(e.id)
        if b is None or b.address != e.address:
            b = Backend(e.address, e.weight, id=e.id)
            self.backends[b.id] = b
        self._set_fields(b, e)
        return b

    def _set_fields(self, b: Backend, e: BackendEntry) -> None:
        b.weight = e.weight
        b.effective_weight = float(e.effective_weight)
        b.admin = e.admin
        b.health = e.health
        b.ejected = e.ejected
        b.max_conn = e.max_conn
        b.limit = worker_share(e.max_conn, self.workers)

    # -- picking ----------------------------------------------------------------------------

    def pick(self, key: bytes | None, tried: Iterable[Backend] = ()) -> Backend | None:
        """Pick an eligible backend below its limit, avoiding ``tried`` (used by retries)."""
        b = self.strategy.pick(key)
        if b is None:
            # Nothing is eligible. With panic = "503" the caller holds or refuses (the L4
            # relay closes the client, the L7 proxy answers 503 with Retry-After).
            return self._panic_pick(tried) if self.panic_all else None
        if b not in tried and not b.full:
            return b
        # Strategies that rotate usually offer another one on the next pick; hashing strategies
        # return the same backend for the same key, so fall back to a scan.
        b2 = self.strategy.pick(key)
        if b2 is not None and b2 not in tried and not b2.full:
            return b2
        best: Backend | None = None
        for cand in self.backends.values():
            if (
                cand.eligible
                and cand not in tried
                and not cand.full
                and (best is None or cand.active < best.active)
            ):
                best = cand
        return best

    def pick_retry(self, key: bytes | None, tried: list[Backend]) -> Backend | None:
        """Pick for a retry: an eligible backend not tried yet, as :meth:`pick`; when every
        eligible one has been tried, the eligible one tried longest ago. So a pool with one
        backend retries that backend (as HAProxy's ``retries`` retry the same server) rather
        than failing at once; the caller's retry count bounds it."""
        b = self.pick(key, tried)
        if b is None:
            for cand in tried:
                if cand.eligible and not cand.full:
                    return cand
        return b

    def _panic_pick(self, tried: Iterable[Backend]) -> Backend | None:
        """Panic mode ``route_all`` (Envoy's panic threshold): when health checks and ejection
        leave nothing, every backend an operator left ``ready`` with a weight takes traffic,
        in rotation, whatever its health. Rare, so a scan is fine."""
        candidates = [
            b
            for b in self.backends.values()
            if b.admin is AdminState.READY and b.weight > 0 and b not in tried and not b.full
        ]
        if not candidates:
            return None
        self._panic_next += 1
        return candidates[self._panic_next % len(candidates)]

    # -- taking and giving back -------------------------------------------------------------

    def acquire(self, backend: Backend) -> None:
        """A connection (L4) or a request (L7) starts using ``backend``."""
        backend.active += 1
        if self.tracks_load:
            self.strategy.on_acquire(backend)  # type: ignore[attr-defined]
        backend.total += 1
        self.attempts += 1
        self.in_flight += 1
        if self.in_flight + self.waiting > self.report_above:
            self._report_demand()

    def release(self, backend: Backend) -> None:
        """What :meth:`acquire` took is given back: the slot goes to the oldest waiter, if
        any. When a backend that is no longer ``ready`` has nothing left here, ``on_idle``
        says so (a drain finished in this worker)."""
        backend.active -= 1
        if self.tracks_load:
            self.strategy.on_release(backend)  # type: ignore[attr-defined]
        self.in_flight -= 1
        # (_admin: the field behind Backend.admin, a C field where lb.model is compiled)
        if not backend.active and backend._admin is not _READY:
            self.on_idle(backend)
        if self.waiting:
            self._wake()

    # -- the queue --------------------------------------------------------------------------

    def enqueue(self, waiter: Waiter) -> float:
        """Nothing could be picked: queue ``waiter`` (or hold it, when no backend is eligible).
        Returns how long it may wait, in seconds; 0.0 when it must be refused now (503): the
        queue is full, or the pool neither queues nor holds."""
        config = self.config
        held = not self.eligible
        timeout = config.hold_timeout if held else config.queue_timeout
        if timeout <= 0.0:
            return 0.0
        if self.waiting >= config.max_queue:
            self.queue_full += 1
            return 0.0
        self.queue[waiter] = (time.monotonic(), held)
        self.waiting += 1
        self._report_demand()
        return timeout

    def leave(self, waiter: Waiter) -> None:
        """A waiter's client went away: it leaves the queue at once."""
        if self.queue.pop(waiter, None) is not None:
            self.waiting -= 1
            self._queue_shrank()

    def expire(self, waiter: Waiter) -> bool:
        """A waiter's time ran out (it answers 503). False when it was not waiting."""
        entry = self.queue.pop(waiter, None)
        if entry is None:
            return False
        self.waiting -= 1
        if entry[1]:
            self.hold_timeouts += 1
        else:
            self.queue_timeouts += 1
        self._queue_shrank()
        return True

    def drop_gone(self) -> None:
        """Drop the waiters whose clients went away while nothing was read from them (a
        request body or tcp bytes paused reading, so no EOF was seen): the worker calls this
        a few times a second while something waits."""
        for waiter in [w for w in self.queue if w.client_gone()]:
            waiter.drop()

    def _wake(self) -> None:
        """Give free slots to the oldest waiters, in order, while some backend can take one."""
        queue = self.queue
        while queue:
            waiter = next(iter(queue))
            b = self.pick(waiter.key)
            if b is None:
                break
            since, _held = queue.pop(waiter)
            self.waiting -= 1
            wait = time.monotonic() - since
            self.waited += 1
            self.queue_wait[latency_bucket(wait)] += 1
            self.queue_wait_sum += wait
            self.acquire(b)
            waiter.granted(b)
        self._report_demand()

    @property
    def held(self) -> int:
        """Waiters held because no backend is eligible (the others are queued)."""
        return 0 if self.eligible else self.waiting

    @property
    def demand(self) -> int:
        return self.in_flight + self.waiting

    def _report_demand(self) -> None:
        """Tell the scaler at once when demand rose above twice what it last heard."""
        d = self.in_flight + self.waiting
        if d > self.report_above:
            self.report_above = 2 * d
            self.on_demand(self)

    def _queue_shrank(self) -> None:
        """A waiter left without being served: the queue depth falls at once for the
        supervisor too (these exits are rare; serving a waiter is not one of them)."""
        self.report_above = 2 * (self.in_flight + self.waiting)
        self.on_demand(self)

    def demand_reported(self) -> None:
        """The stats snapshot carried the demand: a rise from here is news again."""
        self.report_above = 2 * (self.in_flight + self.waiting)

    # -- retries ----------------------------------------------------------------------------

    def retry_allowed(self) -> bool:
        """Whether one more retry fits the budget (and count it). Past windows count half,
        a quarter, ... so the budget follows recent traffic."""
        now = time.monotonic()
        windows = int((now - self.budget_since) / BUDGET_WINDOW)
        if windows:
            self.budget_since += windows * BUDGET_WINDOW
            shift = min(windows, 62)
            self.attempts >>= shift
            self.retried >>= shift
        config = self.config
        first_tries = self.attempts - self.retried
        floor = config.retry_budget_min * BUDGET_WINDOW
        if self.retried < floor + config.retry_budget * first_tries:
            self.retried += 1
            return True
        self.budget_exhausted += 1
        return False

    def note_success(self, backend: Backend) -> None:
        """A success (L4: connected; L7: a response that is not a failure) on a backend whose
        ``failure_streak`` is set: tell the supervisor once that it recovered, which resets
        passive health's consecutive-failure count. Callers guard with
        ``if backend.failure_streak:`` so the common case costs one integer test."""
        failures = backend.failure_streak
        backend.failure_streak = 0
        self.on_success(self.name, backend, failures)


def retire_strategy(strategy: Strategy) -> None:
    """Let a strategy that was replaced, or whose pool a reload removed, free what it holds
    in slices if it can (its ``dismantle`` step: ``consistent_hash``'s ring of 10,000
    backends takes about 9 ms to free in one go); any other is freed when the last reference
    goes."""
    dismantle = getattr(strategy, "dismantle", None)
    schedule = background.scheduler()
    if dismantle is not None and schedule is not None:
        # A plain function, which the scheduler holds strongly (a bound method it holds
        # weakly): the strategy lives until its last slice.
        schedule(functools.partial(dismantle))


def _same(b: Backend, e: BackendEntry) -> bool:
    """``b`` already holds what ``e`` says (its address aside: a new one makes a new Backend)."""
    return (
        b.weight == e.weight
        and b.effective_weight == e.effective_weight
        and b.admin is e.admin
        and b.health is e.health
        and b.ejected == e.ejected
        and b.max_conn == e.max_conn
    )


class _SnapshotJob:
    """One snapshot applied to a pool, in three parts, each of which can stop at a deadline
    and go on in the next slice (``lb.balancing.background``):

    1. *Staging*, ``SNAPSHOT_BATCH`` entries between looks at the clock: each entry is
       compared with the pool's backend of that id. Unchanged: nothing to do (a reload of an
       unchanged pool stops here). Changed: noted, to be applied at the commit. New, or a new
       address: a Backend is made (address parsed, sticky token computed), not yet visible.
       The pool is not touched, so it serves from the set it had.
    2. *The commit*, at once: backends gone are removed, changes applied in place, new ones
       added; the counts and the sticky tokens follow what changed only.
    3. *Feeding the strategy*: what changed, as ``touched`` hints (``Members``), in chunks of
       ``STRATEGY_CHUNK`` backends, one chunk per slice, so that a first build of 10,000 is
       no single long update. Until the last chunk, the strategy picks among the backends it
       was given (the others are in the pool, and the pool's fallback scan may pick them).
       A strategy that builds in slices itself (``consistent_hash``: ``building``) gets all
       of them at once, in the slice after the commit's (its update of 10,000 is several
       milliseconds, on top of the commit's): meanwhile a pool that had no backend before
       queues its requests (``enqueue``), and the end of the job wakes them.

    A newer snapshot supersedes this one (``PoolRuntime._snapshot`` is no longer this job):
    before the commit, its work is dropped; after it, the backends not yet fed to the
    strategy pass to the newer job, which feeds them with its own changes."""

    __slots__ = (
        "__weakref__",  # the scheduler holds ``step`` weakly: a superseded job is dropped
        "added",
        "changed",
        "committed",
        "eligible",
        "entries",
        "limits",
        "next",
        "on_done",
        "pending",
        "pool",
        "replaced",
        "seen",
        "tokens",
    )

    def __init__(
        self,
        pool: PoolRuntime,
        entries: Sequence[BackendEntry],
        on_done: Callable[[], None] | None,
    ) -> None:
        self.pool = pool
        self.entries = entries
        self.on_done = on_done
        self.next = 0  # the next entry to stage
        self.seen: set[str] = set()
        self.added: dict[str, Backend] = {}  # new ids, in the snapshot's order
        self.replaced: dict[str, Backend] = {}  # known ids with a new address
        self.changed: dict[str, BackendEntry] = {}  # known ids whose fields changed
        self.tokens: dict[bytes, Backend] = {}  # sticky tokens of the new Backend objects
        self.eligible = 0  # of ``added``
        self.limits = 0  # of ``added``
        self.committed = False
        # Touched backends not yet handed to the strategy (None: removed), oldest first.
        previous = pool._snapshot
        if previous is not None and previous is not self and previous.committed:
            self.pending: dict[str, Backend | None] = previous.pending
        else:
            self.pending = {}

    def step(self, deadline: float) -> bool:
        """Work until ``deadline``; True: more remains (``background.Step``). A failure is
        logged and ends the job (its ``on_done`` is still called), so that a worker never
        waits for a snapshot that cannot finish."""
        pool = self.pool
        if pool._snapshot is not self:
            return False  # superseded
        try:
            return self._work(deadline)
        except Exception:
            log.exception("pool %s: applying a snapshot failed", pool.name)
            pool._snapshot_done(self)
            if self.on_done is not None:
                self.on_done()
            return False

    def _work(self, deadline: float) -> bool:
        pool = self.pool
        if not self.committed:
            if self._stage(deadline):
                return True
            self._commit()
            if self.pending and (self._builds_itself() or time.perf_counter() > deadline):
                return True
        if self._feed(deadline):
            return True
        pool._snapshot_done(self)
        pool._wake()
        if self.on_done is not None:
            self.on_done()
        return False

    def _stage(self, deadline: float) -> bool:
        pool = self.pool
        backends, entries, seen = pool.backends, self.entries, self.seen
        sticky = pool.sticky_cookie is not None
        i, n = self.next, len(self.entries)
        clock = time.perf_counter
        while i < n:
            for e in entries[i : i + SNAPSHOT_BATCH]:
                seen.add(e.id)
                b = backends.get(e.id)
                if b is not None and b.address == e.address:
                    if not _same(b, e):
                        self.changed[e.id] = e
                    continue
                try:
                    fresh = Backend(e.address, e.weight, id=e.id)
                except ValueError as exc:
                    log.error("pool %s: backend %s ignored: address: %s", pool.name, e.id, exc)
                    seen.discard(e.id)
                    continue
                pool._set_fields(fresh, e)
                self.changed.pop(e.id, None)
                if b is None:
                    self.added[e.id] = fresh
                    self.eligible += fresh.eligible
                    self.limits += fresh.limit > 0
                else:
                    self.replaced[e.id] = fresh
                if sticky:
                    self.tokens[sticky_token(e.id)] = fresh
            i = min(n, i + SNAPSHOT_BATCH)
            if clock() > deadline:
                break
        self.next = i
        return i < n

    def _commit(self) -> None:
        """Apply what was staged, and tell the strategy at once of every removal and change
        (so that it never picks a backend the pool no longer has, nor one in its old state);
        the backends added join it in chunks (``_feed``)."""
        pool = self.pool
        backends, pending = pool.backends, self.pending
        sticky = pool.sticky_cookie is not None
        now: dict[str, Backend | None] = {}  # the strategy hears of these at once
        for gone in backends.keys() - self.seen:
            b = backends.pop(gone)
            pool._count(b, -1)
            if sticky:
                token = sticky_token(gone)
                if pool.by_token.get(token) is b:
                    del pool.by_token[token]
            if pending.pop(gone, b) is b:  # not in ``pending``: the strategy holds it
                now[gone] = None
        changed, replaced = self.changed, self.replaced
        if len(changed) + len(replaced) > 1:
            # In the pool's order, as a whole-list diff would meet them: a strategy's members
            # (round robin's rotation) keep the order they would have had.
            order = [k for k in backends if k in changed or k in replaced]
        else:
            order = [*changed, *replaced]
        for backend_id in order:
            e = changed.get(backend_id)
            if e is not None:
                b = backends[backend_id]
                pool._count(b, -1)
                pool._set_fields(b, e)
                pool._count(b, 1)
            else:
                b = replaced[backend_id]
                pool._count(backends[backend_id], -1)
                backends[backend_id] = b
                pool._count(b, 1)
            if backend_id in pending:
                pending[backend_id] = b  # not fed yet: it joins with the others
            else:
                now[backend_id] = b
        added = self.added
        if backends.keys().isdisjoint(added):  # always, unless the pool was changed meanwhile
            backends.update(added)
            pool.eligible += self.eligible
            pool.limits += self.limits
            pool.limited = pool.limits > 0
        else:
            added = {k: v for k, v in added.items() if k not in backends}
            backends.update(added)
            for b in added.values():
                pool._count(b, 1)
        pending.update(added)
        pool.by_token.update(self.tokens)
        self.committed = True
        # Free what the commit used: a job that goes on feeding the strategy keeps only that.
        self.entries = ()
        self.added, self.replaced, self.changed, self.tokens = {}, {}, {}, {}
        self.seen = set()
        if now or not self._builds_itself():
            self._update(now)

    def _update(self, now: dict[str, Backend | None]) -> None:
        """One update of the strategy: ``now`` and the next chunk of ``pending`` (all of it
        for a strategy that builds in slices itself)."""
        pool, pending = self.pool, self.pending
        if self._builds_itself() or len(pending) <= STRATEGY_CHUNK:
            now.update(pending)
            pending.clear()
        else:
            for k in list(itertools.islice(pending, STRATEGY_CHUNK)):
                now[k] = pending.pop(k)
        if not now:
            return
        if pending:
            members = [b for b in pool.backends.values() if b.id not in pending]
        else:
            members = list(pool.backends.values())
        pool.generation += 1
        pool.strategy.update(Members(members, pool.lineage, pool.generation, now))

    def _builds_itself(self) -> bool:
        """The strategy builds in slices itself (``consistent_hash``: ``building``): it takes
        every backend added in one update, in a slice after the commit's."""
        return getattr(self.pool.strategy, "building", None) is not None

    def _feed(self, deadline: float) -> bool:
        """Hand the backends added to the strategy, a chunk at a time; True: more remain."""
        while self.pending:
            self._update({})
            if self.pending and time.perf_counter() > deadline:
                return True
        return False

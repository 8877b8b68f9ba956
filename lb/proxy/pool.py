"""A worker's view of one pool: its backends, its strategy, how to pick with retries, and the
one place where a backend is taken and given back.

The supervisor is the source of truth for membership and states; ``apply`` takes what it sent.
Backend objects are updated in place so that connections holding one keep counting against it.

``acquire(backend)``/``release(backend)`` are the only code that changes ``Backend.active``,
for L4 connections and L7 requests alike, and ``release`` is where "a draining backend is now
idle in this worker" is noticed (``on_idle``, which the worker turns into a prompt report to
the supervisor). No I/O here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import xxhash

from lb.balancing import StrategyOptions, create_strategy, needs_key
from lb.balancing.base import Strategy
from lb.config import PoolConfig
from lb.model import AdminState, Backend
from lb.wire import BackendEntry


def sticky_token(backend_id: str) -> bytes:
    """The cookie value naming a backend: stable across workers and restarts, and opaque."""
    return xxhash.xxh64_hexdigest(backend_id.encode()).encode()[:12]


SuccessReporter = Callable[[str, Backend, int], None]
IdleReporter = Callable[[Backend], None]


def _ignore_success(pool: str, backend: Backend, failures: int) -> None:
    """``on_success`` until a worker connects the pool to its bus."""


def _ignore_idle(backend: Backend) -> None:
    """``on_idle`` until a worker connects the pool to its bus."""


class PoolRuntime:
    __slots__ = (
        "_panic_next",
        "backends",
        "by_token",
        "config",
        "key_kind",
        "key_name",
        "name",
        "needs_key",
        "on_idle",
        "on_success",
        "report_5xx",
        "sticky_cookie",
        "strategy",
    )

    def __init__(self, name: str, config: PoolConfig) -> None:
        self.name = name
        self.config = config
        self.strategy: Strategy = create_strategy(
            config.strategy,
            StrategyOptions(bounded_load=config.bounded_load, vnodes=config.vnodes),
        )
        self.backends: dict[str, Backend] = {}
        # Called with (pool, backend, failures) when a backend succeeds after failing here.
        self.on_success: SuccessReporter = _ignore_success
        # Called when a backend that is not ``ready`` (draining) has no connection or request
        # left in this worker: the supervisor learns at once that it may be removable.
        self.on_idle: IdleReporter = _ignore_idle
        self._panic_next = 0
        # Sticky sessions (http): cookie value -> backend.
        self.by_token: dict[bytes, Backend] = {}
        self._derive()

    def _derive(self) -> None:
        """Per-request decisions precomputed from the config (the L7 proxy reads these)."""
        config = self.config
        kind, _, name = config.hash_key.partition(":")
        self.key_kind = kind
        self.key_name = name.lower().encode()
        # The strategy says whether it hashes (a plugin that does not say gets a key).
        self.needs_key = needs_key(self.strategy)
        self.sticky_cookie = config.sticky_cookie.encode() if config.sticky_cookie else None
        self.report_5xx = config.passive is not None and config.passive.on_5xx

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

    def reconfigure(self, config: PoolConfig) -> None:
        """A reload changed pool settings: rebuild the strategy, keep the backends."""
        if config != self.config:
            self.config = config
            self.strategy = create_strategy(
                config.strategy,
                StrategyOptions(bounded_load=config.bounded_load, vnodes=config.vnodes),
            )
            self._derive()
            self._rebuild_tokens()
            self.strategy.update(list(self.backends.values()))

    def apply_snapshot(self, entries: Iterable[BackendEntry]) -> None:
        seen: set[str] = set()
        for entry in entries:
            self._upsert(entry)
            seen.add(entry.id)
        for gone in set(self.backends) - seen:
            del self.backends[gone]
        self._rebuild_tokens()
        self.strategy.update(list(self.backends.values()))

    def apply_backend(self, entry: BackendEntry) -> None:
        self._upsert(entry)
        self._rebuild_tokens()
        self.strategy.update(list(self.backends.values()))

    def remove(self, backend_id: str) -> None:
        if self.backends.pop(backend_id, None) is not None:
            self._rebuild_tokens()
            self.strategy.update(list(self.backends.values()))

    def _rebuild_tokens(self) -> None:
        if self.sticky_cookie is not None:
            self.by_token = {sticky_token(b.id): b for b in self.backends.values()}

    def _upsert(self, e: BackendEntry) -> None:
        b = self.backends.get(e.id)
        if b is None or b.address != e.address:
            b = Backend(e.address, e.weight, id=e.id)
            self.backends[b.id] = b
        b.weight = e.weight
        b.effective_weight = float(e.effective_weight)
        b.admin = e.admin
        b.health = e.health
        b.ejected = e.ejected

    def pick(self, key: bytes | None, tried: Iterable[Backend] = ()) -> Backend | None:
        """Pick an eligible backend, avoiding ``tried`` (used by retries)."""
        b = self.strategy.pick(key)
        if b is None:
            # Nothing is eligible. With panic = "503" the caller refuses (the L4 relay closes
            # the client, the L7 proxy answers 503 with Retry-After).
            return self._panic_pick(tried) if self.config.panic == "route_all" else None
        if b not in tried:
            return b
        # Strategies that rotate usually offer another one on the next pick; hashing strategies
        # return the same backend for the same key, so fall back to a scan.
        b2 = self.strategy.pick(key)
        if b2 is not None and b2 not in tried:
            return b2
        for cand in self.backends.values():
            if cand.eligible and cand not in tried:
                return cand
        return None

    def pick_retry(self, key: bytes | None, tried: list[Backend]) -> Backend | None:
        """Pick for a retry: an eligible backend not tried yet, as :meth:`pick`; when every
        eligible one has been tried, the eligible one tried longest ago. So a pool with one
        backend retries that backend (as HAProxy's ``retries`` retry the same server) rather
        than failing at once; the caller's retry count bounds it."""
        b = self.pick(key, tried)
        if b is None:
            for cand in tried:
                if cand.eligible:
                    return cand
        return b

    def _panic_pick(self, tried: Iterable[Backend]) -> Backend | None:
        """Panic mode ``route_all`` (Envoy's panic threshold): when health checks and ejection
        leave nothing, every backend an operator left ``ready`` with a weight takes traffic,
        in rotation, whatever its health. Rare, so a scan is fine."""
        candidates = [
            b
            for b in self.backends.values()
            if b.admin is AdminState.READY and b.weight > 0 and b not in tried
        ]
        if not candidates:
            return None
        self._panic_next += 1
        return candidates[self._panic_next % len(candidates)]

    def acquire(self, backend: Backend) -> None:
        """A connection (L4) or a request (L7) starts using ``backend``."""
        backend.active += 1
        backend.total += 1

    def release(self, backend: Backend) -> None:
        """What :meth:`acquire` took is given back. When a backend that is no longer ``ready``
        has nothing left here, ``on_idle`` says so (a drain finished in this worker)."""
        backend.active -= 1
        if not backend.active and backend.admin is not AdminState.READY:
            self.on_idle(backend)

    def note_success(self, backend: Backend) -> None:
        """A success (L4: connected; L7: a response that is not a failure) on a backend whose
        ``failure_streak`` is set: tell the supervisor once that it recovered, which resets
        passive health's consecutive-failure count. Callers guard with
        ``if backend.failure_streak:`` so the common case costs one integer test."""
        failures = backend.failure_streak
        backend.failure_streak = 0
        self.on_success(self.name, backend, failures)

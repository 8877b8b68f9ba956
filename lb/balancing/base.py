"""The strategy interface. Strategies are pure: values in, a decision out, no I/O."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from lb.model import Backend


@runtime_checkable
class Strategy(Protocol):
    """Picks a backend for a connection (L4) or a request (L7).

    ``update`` is called with the pool's full backend list whenever membership, weight or
    state changes; a strategy must consider only ``backend.eligible`` ones. ``pick`` is on the
    hot path: it must be cheap and must not allocate per call where it can avoid it.
    ``key`` is the hash key (source IP, header value, ...) for strategies that use one.

    A strategy says whether it uses a key with a class attribute ``needs_key``; the proxy
    computes one (from the pool's ``hash_key``) only for those that do. A third-party strategy
    without the attribute gets a key, like ``consistent_hash`` (see :func:`needs_key`).
    """

    def update(self, backends: Sequence[Backend]) -> None: ...

    def pick(self, key: bytes | None) -> Backend | None: ...


class LoadTracking(Protocol):
    """Optional hooks for a strategy that keeps backends ordered by load (``least_conn``, and
    ``consistent_hash`` with ``bounded_load``), so that ``pick`` need not read every ``active``.

    A strategy opts in with ``tracks_load = True`` (a class or instance attribute, read once
    when the pool creates or rebuilds the strategy). The pool then calls ``on_acquire(backend)``
    right after ``backend.active`` went up by one and ``on_release(backend)`` right after it
    went down by one, for every backend of the pool, including ones the strategy does not hold
    (ineligible, removed): those the hooks ignore. ``update`` reads ``active`` as it is, so a
    strategy can (re)build its order from the counts at any time. A strategy without the
    attribute costs the pool nothing per request.
    """

    tracks_load: bool

    def on_acquire(self, backend: Backend) -> None: ...

    def on_release(self, backend: Backend) -> None: ...


def tracks_load(strategy: object) -> bool:
    """Whether the pool must call ``strategy.on_acquire``/``on_release`` (see
    :class:`LoadTracking`): its ``tracks_load`` attribute, and ``False`` for one that does not
    say. Raises TypeError for a strategy that says so without the two hooks."""
    if not getattr(strategy, "tracks_load", False):
        return False
    if not all(callable(getattr(strategy, hook, None)) for hook in ("on_acquire", "on_release")):
        raise TypeError(
            f"{type(strategy).__qualname__} sets tracks_load but lacks on_acquire/on_release"
        )
    return True


def needs_key(strategy: object) -> bool:
    """Whether the proxy must compute a hash key for ``strategy``'s picks: the strategy's own
    ``needs_key`` attribute, and ``True`` for one that does not say (a plugin may hash)."""
    return bool(getattr(strategy, "needs_key", True))


class LatencyTracking(Protocol):
    """Optional hook for a strategy that scores backends by their latency (``peak_ewma``).

    A strategy opts in with ``tracks_latency = True`` (read once when the pool creates or
    rebuilds the strategy, like ``tracks_load``). The proxy then calls
    ``on_latency(backend, seconds, now)`` for each answer: http, with the time from sending
    the request to the end of its response (and, for a backend that did not start answering
    within ``response_timeout``, with that wait); tcp, with the connect time. ``now`` is the
    loop's clock when it ended, the one time source a strategy needs. It is called before the
    pool releases the request (or connection), so ``backend.active`` still counts it
    (``peak_ewma`` reads it there for the pool's usual load). Called for backends the
    strategy may not hold (no longer eligible): those it ignores. A strategy without the
    attribute costs the pool nothing per request.
    """

    tracks_latency: bool

    def on_latency(self, backend: Backend, seconds: float, now: float) -> None: ...


def tracks_latency(strategy: object) -> bool:
    """Whether the proxy must call ``strategy.on_latency`` (see :class:`LatencyTracking`):
    its ``tracks_latency`` attribute, and ``False`` for one that does not say. Raises
    TypeError for a strategy that says so without the hook."""
    if not getattr(strategy, "tracks_latency", False):
        return False
    if not callable(getattr(strategy, "on_latency", None)):
        raise TypeError(f"{type(strategy).__qualname__} sets tracks_latency but lacks on_latency")
    return True

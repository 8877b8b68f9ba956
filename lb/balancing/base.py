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


def needs_key(strategy: object) -> bool:
    """Whether the proxy must compute a hash key for ``strategy``'s picks: the strategy's own
    ``needs_key`` attribute, and ``True`` for one that does not say (a plugin may hash)."""
    return bool(getattr(strategy, "needs_key", True))

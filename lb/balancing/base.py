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
    """

    def update(self, backends: Sequence[Backend]) -> None: ...

    def pick(self, key: bytes | None) -> Backend | None: ...

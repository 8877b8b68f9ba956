"""A worker's view of one pool: its backends, its strategy, and how to pick with retries.

The supervisor is the source of truth for membership and states; ``apply`` takes what it sent.
Backend objects are updated in place so that connections holding one keep counting against it.
No I/O here.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from lb.balancing import StrategyOptions, create_strategy
from lb.balancing.base import Strategy
from lb.config import PoolConfig
from lb.model import AdminState, Backend, HealthState


class PoolRuntime:
    __slots__ = ("backends", "config", "name", "strategy")

    def __init__(self, name: str, config: PoolConfig) -> None:
        self.name = name
        self.config = config
        self.strategy: Strategy = create_strategy(
            config.strategy,
            StrategyOptions(bounded_load=config.bounded_load, vnodes=config.vnodes),
        )
        self.backends: dict[str, Backend] = {}

    def reconfigure(self, config: PoolConfig) -> None:
        """A reload changed pool settings: rebuild the strategy, keep the backends."""
        if config != self.config:
            self.config = config
            self.strategy = create_strategy(
                config.strategy,
                StrategyOptions(bounded_load=config.bounded_load, vnodes=config.vnodes),
            )
            self.strategy.update(list(self.backends.values()))

    def apply_snapshot(self, entries: Iterable[dict[str, Any]]) -> None:
        seen: set[str] = set()
        for entry in entries:
            self._upsert(entry)
            seen.add(entry["id"])
        for gone in set(self.backends) - seen:
            del self.backends[gone]
        self.strategy.update(list(self.backends.values()))

    def apply_backend(self, entry: dict[str, Any]) -> None:
        self._upsert(entry)
        self.strategy.update(list(self.backends.values()))

    def remove(self, backend_id: str) -> None:
        if self.backends.pop(backend_id, None) is not None:
            self.strategy.update(list(self.backends.values()))

    def _upsert(self, e: dict[str, Any]) -> None:
        b = self.backends.get(e["id"])
        if b is None or b.address != e["address"]:
            b = Backend(e["address"], e["weight"], id=e["id"])
            self.backends[b.id] = b
        b.weight = e["weight"]
        b.effective_weight = float(e.get("effective_weight", e["weight"]))
        b.admin = AdminState(e["admin"])
        b.health = HealthState(e["health"])
        b.ejected = bool(e.get("ejected", False))

    def pick(self, key: bytes | None, tried: Iterable[Backend] = ()) -> Backend | None:
        """Pick an eligible backend, avoiding ``tried`` (used by retries)."""
        b = self.strategy.pick(key)
        if b is None or b not in tried:
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

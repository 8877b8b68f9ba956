"""The control plane's authoritative pool state: every backend, its states, weight and origin.

Theory of operation
-------------------
``ClusterState`` is the single writer of backend state. The config defines pools and their
initial backends; the control API, the health checker and passive outlier detection change
them at runtime through the methods below. Every change is validated first and applied whole,
or not at all (a refused call raises ``StateError`` and changes nothing). After a change the
state calls ``on_change(pool, backend)`` (or ``on_remove(pool, id)``), which the supervisor
uses to send deltas to the workers and to persist runtime changes.

Runtime changes (added/removed backends, weights, admin states) survive a restart through the
state file (see ``lb/persist.py``); health is never persisted: a backend that comes back after a
restart is checked again.

This module does no I/O and never imports asyncio.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

from lb.config import Config, PoolConfig
from lb.model import (
    AdminState,
    HealthState,
    check_admin_transition,
    check_health_transition,
    parse_address,
)

log = logging.getLogger("lb.state")


class StateError(Exception):
    """A refused change. ``status`` is the HTTP status the control API answers with."""

    def __init__(self, status: int, field: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.field = field
        self.message = message


class ManagedBackend:
    """A backend as the control plane knows it (a superset of what workers receive)."""

    __slots__ = (
        "address",
        "admin",
        "checks_failed",
        "checks_passed",
        "dynamic",
        "effective_weight",
        "ejected_until",
        "ejections",
        "health",
        "health_since",
        "id",
        "last_check",
        "metadata",
        "pool",
        "up_since",
        "weight",
    )

    def __init__(
        self,
        pool: str,
        address: str,
        weight: int,
        *,
        id: str | None = None,
        admin: AdminState = AdminState.READY,
        health: HealthState = HealthState.UP,
        metadata: dict[str, str] | None = None,
        dynamic: bool = False,
        now: float = 0.0,
    ) -> None:
        self.pool = pool
        self.address = address
        self.id = id or address
        self.weight = weight
        self.effective_weight = float(weight)
        self.admin = admin
        self.health = health
        self.health_since = now
        self.up_since: float | None = now if health is HealthState.UP else None
        self.ejected_until = 0.0
        self.ejections = 0
        self.metadata = dict(metadata or {})
        self.dynamic = dynamic  # added at runtime (not from the config file)
        self.last_check = ""
        self.checks_passed = 0  # consecutive
        self.checks_failed = 0  # consecutive

    @property
    def name(self) -> str:
        return f"{self.pool}/{self.address}"

    def ejected(self, now: float) -> bool:
        return now < self.ejected_until

    def entry(self, now: float) -> dict[str, Any]:
        """How this backend travels to the workers over the bus."""
        return {
            "id": self.id,
            "address": self.address,
            "weight": self.weight,
            "effective_weight": self.effective_weight,
            "admin": self.admin.value,
            "health": self.health.value,
            "ejected": self.ejected(now),
        }

    def view(self, now: float) -> dict[str, Any]:
        """How the control API shows this backend (counters are merged in by the caller)."""
        return {
            **self.entry(now),
            "pool": self.pool,
            "metadata": self.metadata,
            "dynamic": self.dynamic,
            "last_check": self.last_check,
            "ejected_for": round(max(0.0, self.ejected_until - now), 3),
        }


ChangeHook = Callable[[str, ManagedBackend], None]
RemoveHook = Callable[[str, str], None]


class ClusterState:
    def __init__(self, config: Config, now: float = 0.0) -> None:
        self.config = config
        self.pools: dict[str, dict[str, ManagedBackend]] = {}
        self.on_change: ChangeHook = lambda _pool, _b: None
        self.on_remove: RemoveHook = lambda _pool, _id: None
        for name, pool in config.pools.items():
            self.pools[name] = {}
            for bc in pool.backends:
                b = ManagedBackend(
                    name,
                    bc.address,
                    bc.weight,
                    id=bc.id,
                    health=self.initial_health(pool),
                    now=now,
                )
                self.pools[name][b.id] = b

    @staticmethod
    def initial_health(pool: PoolConfig) -> HealthState:
        # Without active checks there is nobody to move a backend out of ``checking``.
        return HealthState.CHECKING if getattr(pool, "health", None) else HealthState.UP

    # -- lookups ----------------------------------------------------------------------------

    def pool(self, name: str) -> dict[str, ManagedBackend]:
        try:
            return self.pools[name]
        except KeyError:
            raise StateError(
                404, "pool", f"no pool {name!r}; pools: {', '.join(sorted(self.pools))}"
            ) from None

    def backend(self, pool: str, backend_id: str) -> ManagedBackend:
        backends = self.pool(pool)
        b = backends.get(backend_id)
        if b is None:
            # Accept the address as well as the id, as operators type what they see.
            b = next((x for x in backends.values() if x.address == backend_id), None)
        if b is None:
            raise StateError(404, "backend", f"no backend {backend_id!r} in pool {pool!r}")
        return b

    def all_backends(self) -> Iterator[ManagedBackend]:
        for backends in self.pools.values():
            yield from backends.values()

    # -- changes ----------------------------------------------------------------------------

    def add_backend(
        self,
        pool: str,
        address: str,
        weight: int = 1,
        *,
        id: str | None = None,
        metadata: dict[str, str] | None = None,
        now: float = 0.0,
    ) -> tuple[ManagedBackend, bool]:
        """Add a backend; idempotent for the same address and id. Returns (backend, created)."""
        backends = self.pool(pool)
        try:
            parse_address(address)
        except ValueError as exc:
            raise StateError(422, "address", str(exc)) from None
        if not 0 <= weight <= 1000:
            raise StateError(422, "weight", "weight must be between 0 and 1000")
        bid = id or address
        existing = backends.get(bid)
        if existing is not None:
            if existing.address != address:
                raise StateError(
                    409, "id", f"id {bid!r} already names {existing.address}, not {address}"
                )
            return existing, False
        for other in backends.values():
            if other.address == address and id is None:
                return other, False
        b = ManagedBackend(
            pool,
            address,
            weight,
            id=bid,
            health=self.initial_health(self.config.pools[pool]),
            metadata=metadata,
            dynamic=True,
            now=now,
        )
        backends[b.id] = b
        log.info(
            "%s added (weight %d, %s)",
            b.name,
            weight,
            b.health,
            extra={"event": {"event": "backend_added", "pool": pool, "backend": b.address}},
        )
        self.on_change(pool, b)
        return b, True

    def set_weight(self, pool: str, backend_id: str, weight: int) -> ManagedBackend:
        if not 0 <= weight <= 1000:
            raise StateError(422, "weight", "weight must be between 0 and 1000")
        b = self.backend(pool, backend_id)
        if b.weight != weight:
            b.weight = weight
            b.effective_weight = float(weight)
            self.on_change(pool, b)
        return b

    def set_admin(
        self, pool: str, backend_id: str, admin: AdminState, cause: str = "api"
    ) -> ManagedBackend:
        b = self.backend(pool, backend_id)
        if b.admin is not admin:
            check_admin_transition(b.admin, admin)
            log.info(
                "%s admin %s -> %s: %s",
                b.name,
                b.admin,
                admin,
                cause,
                extra={
                    "event": {
                        "event": "admin_state",
                        "pool": pool,
                        "backend": b.address,
                        "from": b.admin.value,
                        "to": admin.value,
                    }
                },
            )
            b.admin = admin
            self.on_change(pool, b)
        return b

    def set_health(
        self, pool: str, backend_id: str, health: HealthState, cause: str, now: float
    ) -> ManagedBackend:
        b = self.backend(pool, backend_id)
        if b.health is not health:
            check_health_transition(b.health, health)
            log.info(
                "%s %s -> %s: %s",
                b.name,
                b.health,
                health,
                cause,
                extra={
                    "event": {
                        "event": "health_state",
                        "pool": pool,
                        "backend": b.address,
                        "from": b.health.value,
                        "to": health.value,
                        "cause": cause,
                    }
                },
            )
            b.health = health
            b.health_since = now
            b.up_since = now if health is HealthState.UP else None
            self.on_change(pool, b)
        return b

    def remove(self, pool: str, backend_id: str) -> ManagedBackend:
        b = self.backend(pool, backend_id)
        del self.pools[pool][b.id]
        log.info(
            "%s removed",
            b.name,
            extra={"event": {"event": "backend_removed", "pool": pool, "backend": b.address}},
        )
        self.on_remove(pool, b.id)
        return b

    # -- bus --------------------------------------------------------------------------------

    def pools_message(self, now: float) -> dict[str, Any]:
        return {
            "type": "pools",
            "pools": {
                name: [b.entry(now) for b in backends.values()]
                for name, backends in self.pools.items()
            },
        }

"""The control plane's authoritative pool state: every backend, its states, weight and origin.

Theory of operation
-------------------
``ClusterState`` is the single writer of backend state. The config defines pools and their
initial backends; the control API, the health checker and passive outlier detection change
them at runtime through the methods below. Every change is validated first and applied whole,
or not at all (a refused call raises ``StateError`` and changes nothing). After a change the
state calls ``on_change(pool, backend)`` (or ``on_remove(pool, id)``): a typed report of what
changed, which the supervisor turns into bus deltas for the workers (``lb/control/plane.py``
builds the wire messages of ``lb/wire.py``) and uses to persist runtime changes. This module
knows nothing of the bus.

Runtime changes (added/removed backends, weights, admin states) survive a restart through the
state file (see ``lb/persist.py``); health is never persisted: a backend that comes back after a
restart is checked again.

This module does no I/O and never imports asyncio.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from lb.config import Config, PoolConfig
from lb.health_rules import Streaks, record, slow_start_weight
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
    """A backend as the control plane knows it (a superset of what workers receive, which is
    ``lb.wire.BackendEntry``)."""

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
        "max_conn",
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
        max_conn: int | None = None,
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
        # This backend's own limit (the config's or the API's); None: the pool's max_conn.
        self.max_conn = max_conn
        self.last_check = ""
        self.checks_passed = 0  # consecutive
        self.checks_failed = 0  # consecutive

    @property
    def name(self) -> str:
        return f"{self.pool}/{self.address}"

    def ejected(self, now: float) -> bool:
        return now < self.ejected_until

    def eligible(self, now: float) -> bool:
        """May take new traffic (``lb.model.Backend.eligible``, as the control plane sees it)."""
        return (
            self.admin is AdminState.READY
            and self.health is HealthState.UP
            and not self.ejected(now)
            and self.effective_weight > 0
        )

    def view(self, now: float) -> dict[str, Any]:
        """How the control API shows this backend (counters are merged in by the caller)."""
        return {
            "id": self.id,
            "address": self.address,
            "weight": self.weight,
            "effective_weight": self.effective_weight,
            "admin": self.admin.value,
            "health": self.health.value,
            "ejected": self.ejected(now),
            "pool": self.pool,
            "metadata": self.metadata,
            "dynamic": self.dynamic,
            "last_check": self.last_check,
            "ejected_for": round(max(0.0, self.ejected_until - now), 3),
        }


ChangeHook = Callable[[str, ManagedBackend], None]
RemoveHook = Callable[[str, str], None]


@dataclass(frozen=True)
class BackendSpec:
    """A backend as it should be after a config (re)load: the config merged with runtime
    changes (see ``lb/persist.py``). Health is not part of it: it is observed, not declared."""

    id: str
    address: str
    weight: int
    admin: AdminState = AdminState.READY
    metadata: dict[str, str] = field(default_factory=dict)
    dynamic: bool = False
    max_conn: int | None = None  # its own limit; None: the pool's


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
                    max_conn=bc.max_conn,
                )
                self.pools[name][b.id] = b

    @staticmethod
    def initial_health(pool: PoolConfig) -> HealthState:
        # Without active checks there is nobody to move a backend out of ``checking``.
        return HealthState.CHECKING if pool.health is not None else HealthState.UP

    def max_conn_of(self, b: ManagedBackend) -> int:
        """The limit in force for ``b`` (all workers together; 0: none)."""
        if b.max_conn is not None:
            return b.max_conn
        pool = self.config.pools.get(b.pool)
        return pool.max_conn if pool is not None else 0

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
        max_conn: int | None = None,
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
            max_conn=max_conn,
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

    def set_max_conn(self, pool: str, backend_id: str, max_conn: int) -> ManagedBackend:
        if not 0 <= max_conn <= 1_000_000:
            raise StateError(422, "max_conn", "max_conn must be between 0 and 1000000")
        b = self.backend(pool, backend_id)
        if b.max_conn != max_conn:
            b.max_conn = max_conn
            log.info(
                "%s max_conn %d",
                b.name,
                max_conn,
                extra={"event": {"event": "backend_max_conn", "pool": pool, "backend": b.address}},
            )
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
            pool_cfg = self.config.pools.get(pool)
            if health is HealthState.UP and pool_cfg is not None and pool_cfg.slow_start > 0:
                # Come up at the slow-start floor; the supervisor ramps it from there. Setting it
                # here means the workers never see the full weight before the ramp starts.
                b.effective_weight = slow_start_weight(b.weight, 0.0, pool_cfg.slow_start)
            self.on_change(pool, b)
        return b

    # -- health: active check results, passive ejection, slow start ------------------------

    def record_check(self, pool: str, backend_id: str, passed: bool, detail: str) -> ManagedBackend:
        """Note one active check result: the rise/fall streaks and ``last_check``. Workers do
        not see these, so nothing is sent; ``set_health`` follows when a threshold is met."""
        b = self.backend(pool, backend_id)
        streaks = record(Streaks(b.checks_passed, b.checks_failed), passed)
        b.checks_passed, b.checks_failed = streaks.passed, streaks.failed
        b.last_check = detail
        return b

    def set_effective_weight(self, pool: str, backend_id: str, weight: float) -> ManagedBackend:
        """The weight strategies use (slow start), clamped to ``0..weight``."""
        b = self.backend(pool, backend_id)
        weight = min(max(float(weight), 0.0), float(b.weight))
        if b.effective_weight != weight:
            b.effective_weight = weight
            self.on_change(pool, b)
        return b

    def eject(
        self, pool: str, backend_id: str, until: float, ejections: int, cause: str, now: float
    ) -> ManagedBackend:
        """Take a backend out of rotation until ``until`` (passive outlier detection)."""
        b = self.backend(pool, backend_id)
        if until <= now:
            raise StateError(422, "until", "an ejection must end in the future")
        log.info(
            "%s ejected: %s",
            b.name,
            cause,
            extra={
                "event": {
                    "event": "ejected",
                    "pool": pool,
                    "backend": b.address,
                    "seconds": round(until - now, 3),
                    "ejections": ejections,
                    "cause": cause,
                }
            },
        )
        b.ejected_until = until
        b.ejections = ejections
        self.on_change(pool, b)
        return b

    def readmit(self, pool: str, backend_id: str, cause: str, now: float) -> ManagedBackend:
        """End an ejection (its time came, or an operator says so) and tell the workers.
        ``ejected_until`` then records when the backend came back (repeat ejections decay
        from there)."""
        b = self.backend(pool, backend_id)
        log.info(
            "%s readmitted: %s",
            b.name,
            cause,
            extra={
                "event": {"event": "readmitted", "pool": pool, "backend": b.address, "cause": cause}
            },
        )
        b.ejected_until = min(b.ejected_until, now)
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

    def apply_config(
        self, config: Config, specs: Mapping[str, Sequence[BackendSpec]], now: float
    ) -> list[str]:
        """Make ``config`` current with the backends in ``specs`` (startup overlay, reload).

        Pools missing from ``config`` go away with their backends. A backend whose id and
        address are kept keeps its health; others are added (health as for a new backend) or
        removed. Returns one human-readable line per change. The caller has validated
        ``config``; nothing here can fail half-way.
        """
        changes: list[str] = []
        self.config = config
        for name in [p for p in self.pools if p not in config.pools]:
            for bid in list(self.pools[name]):
                self.remove(name, bid)
            del self.pools[name]
            changes.append(f"pool {name} removed")
        for name, pool_cfg in config.pools.items():
            if name not in self.pools:
                self.pools[name] = {}
                changes.append(f"pool {name} added")
            backends = self.pools[name]
            wanted = {s.id: s for s in specs.get(name, ())}
            for bid, b in list(backends.items()):
                spec = wanted.get(bid)
                if spec is None or spec.address != b.address:
                    self.remove(name, bid)
                    changes.append(f"backend {name}/{bid} removed")
            checked = self.initial_health(pool_cfg) is HealthState.CHECKING
            for spec in wanted.values():
                existing = backends.get(spec.id)
                if existing is None:
                    b = ManagedBackend(
                        name,
                        spec.address,
                        spec.weight,
                        id=spec.id,
                        admin=spec.admin,
                        health=self.initial_health(pool_cfg),
                        metadata=spec.metadata,
                        dynamic=spec.dynamic,
                        now=now,
                        max_conn=spec.max_conn,
                    )
                    backends[b.id] = b
                    changes.append(f"backend {name}/{b.id} added")
                    self.on_change(name, b)
                    continue
                b = existing
                changed = False
                if b.weight != spec.weight:
                    changes.append(f"backend {name}/{b.id} weight {b.weight} -> {spec.weight}")
                    b.weight = spec.weight
                    b.effective_weight = float(spec.weight)
                    changed = True
                if b.max_conn != spec.max_conn:
                    changes.append(
                        f"backend {name}/{b.id} max_conn {b.max_conn} -> {spec.max_conn}"
                    )
                    b.max_conn = spec.max_conn
                    changed = True
                if b.admin is not spec.admin:
                    changes.append(f"backend {name}/{b.id} admin {b.admin} -> {spec.admin}")
                    b.admin = spec.admin
                    changed = True
                if b.metadata != spec.metadata or b.dynamic != spec.dynamic:
                    b.metadata = dict(spec.metadata)
                    b.dynamic = spec.dynamic
                    changed = True
                if not checked and b.health is not HealthState.UP:
                    # Health checks were turned off: nobody would ever move it out of this state.
                    b.health = HealthState.UP
                    b.health_since = now
                    b.up_since = now
                    changes.append(f"backend {name}/{b.id} up (pool has no health checks)")
                    changed = True
                if changed:
                    self.on_change(name, b)
        return changes

"""Backends, pools and their states: the values every layer agrees on.

Theory of operation
-------------------
A backend has two independent states and one timer:

* **admin** (``ready``, ``drain``, ``maint``) is what an operator, the config or the scaler
  asked for. Only ``ready`` backends receive new connections or requests.
* **health** (``checking``, ``up``, ``down``) is what the health checker observed. A backend
  added at runtime starts in ``checking`` and only becomes eligible after its first passing
  check. A pool without health checks treats every backend as ``up``.
* **ejected_until** is a monotonic deadline set by passive outlier detection; while the clock
  is before it the backend is not eligible.

The supervisor owns these values and is the only writer. Workers receive copies over the bus
and keep ``active`` (connections or in-flight requests in *this* worker) themselves.

This module does no I/O. It must never import asyncio or touch a socket.
"""

from __future__ import annotations

import enum

from lb.histogram import LATENCY_BUCKETS


class AdminState(enum.StrEnum):
    READY = "ready"
    DRAIN = "drain"
    MAINT = "maint"


class HealthState(enum.StrEnum):
    CHECKING = "checking"
    UP = "up"
    DOWN = "down"


class IllegalTransition(ValueError):
    """Raised when a state change is not in the transition table."""


# Health moves only along these edges. ``checking`` is the entry state: a backend leaves it on
# its first check result and never returns to it.
HEALTH_TRANSITIONS: dict[HealthState, frozenset[HealthState]] = {
    HealthState.CHECKING: frozenset({HealthState.UP, HealthState.DOWN}),
    HealthState.UP: frozenset({HealthState.DOWN}),
    HealthState.DOWN: frozenset({HealthState.UP}),
}

# Every admin state may move to every other: operators must always be able to undo a drain.
ADMIN_TRANSITIONS: dict[AdminState, frozenset[AdminState]] = {
    s: frozenset(AdminState) - {s} for s in AdminState
}


def check_health_transition(old: HealthState, new: HealthState) -> None:
    if new not in HEALTH_TRANSITIONS[old]:
        raise IllegalTransition(f"health {old} -> {new} is not allowed")


def check_admin_transition(old: AdminState, new: AdminState) -> None:
    if new not in ADMIN_TRANSITIONS[old]:
        raise IllegalTransition(f"admin {old} -> {new} is not allowed")


def parse_address(address: str) -> tuple[str, int]:
    """Split ``host:port`` (``[v6]:port`` for IPv6). Raises ValueError with a readable reason."""
    host, sep, port_s = address.rpartition(":")
    if not sep or not host:
        raise ValueError(f"{address!r} is not host:port")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not port_s.isdigit() or not 0 < int(port_s) < 65536:
        raise ValueError(f"{address!r} has no valid port (1-65535)")
    return host, int(port_s)


class Backend:
    """One upstream server as the data plane sees it.

    ``weight`` is configured, ``effective_weight`` is what strategies use (slow start scales it
    down while a backend ramps up). ``active`` counts connections (L4) or in-flight requests
    (L7) in this process and is kept by the proxy; ``least_conn`` reads it. The counters below
    it are this process's totals.

    ``eligible`` (may receive new connections or requests) is a plain attribute, read per
    request: ``admin``, ``health``, ``ejected`` and ``effective_weight`` are properties whose
    setters keep it up to date, so it is never set directly. Compiled (``model.pxd``), the
    data path's compiled modules read these fields as C fields.
    """

    __slots__ = (
        "_admin",
        "_effective_weight",
        "_ejected",
        "_health",
        "active",
        "address",
        "bytes_in",
        "bytes_out",
        "connect_failures",
        "eligible",
        "failure_streak",
        "host",
        "id",
        "latency",
        "latency_sum",
        "limit",
        "max_conn",
        "port",
        "responses",
        "retries",
        "total",
        "weight",
    )

    def __init__(
        self,
        address: str,
        weight: int = 1,
        *,
        id: str | None = None,
        admin: AdminState = AdminState.READY,
        health: HealthState = HealthState.UP,
        ejected: bool = False,
        effective_weight: float | None = None,
    ) -> None:
        self.address = address
        self.host, self.port = parse_address(address)
        self.id = id or address
        self.weight = weight
        # The four values eligibility depends on are properties that keep ``eligible`` (a
        # plain attribute, read per request) up to date whenever one of them is set.
        self._effective_weight = float(weight if effective_weight is None else effective_weight)
        self._admin = admin
        self._health = health
        self._ejected = ejected
        self.eligible = False
        self._refresh()
        self.active = 0
        # max_conn is the configured limit for the whole lb (0: none); limit is this worker's
        # share of it (lb.proxy.pool.worker_share), which PoolRuntime enforces.
        self.max_conn = 0
        self.limit = 0
        # Counters kept by the data plane of this process (plain ints, read by stats snapshots).
        self.total = 0  # connections (L4) or requests (L7) sent to this backend
        self.connect_failures = 0
        # Failures this process reported since the backend's last success. A proxy tests it
        # after each success (``if b.failure_streak: pool.note_success(b)``) so that passive
        # health hears about recoveries at the cost of one integer test.
        self.failure_streak = 0
        self.bytes_in = 0
        self.bytes_out = 0
        # L7 only: responses by status class (index status // 100) and a per-bucket (not
        # cumulative) histogram of upstream response times (bounds: lb.histogram.LATENCY_BOUNDS).
        self.responses = [0, 0, 0, 0, 0, 0]
        self.latency = [0] * LATENCY_BUCKETS
        self.latency_sum = 0.0  # seconds, the histogram's sum (Prometheus ``_sum``)
        # Requests (L7) or connections (L4) that failed here before reaching it and were
        # retried on another backend (counted on the retry path only).
        self.retries = 0

    def _refresh(self) -> None:
        """``eligible``: may receive new connections or requests."""
        self.eligible = (
            self._admin is AdminState.READY
            and self._health is HealthState.UP
            and not self._ejected
            and self._effective_weight > 0
        )

    @property
    def admin(self) -> AdminState:
        return self._admin

    @admin.setter
    def admin(self, value: AdminState) -> None:
        self._admin = value
        self._refresh()

    @property
    def health(self) -> HealthState:
        return self._health

    @health.setter
    def health(self, value: HealthState) -> None:
        self._health = value
        self._refresh()

    @property
    def ejected(self) -> bool:
        return self._ejected

    @ejected.setter
    def ejected(self, value: bool) -> None:
        self._ejected = value
        self._refresh()

    @property
    def effective_weight(self) -> float:
        return self._effective_weight

    @effective_weight.setter
    def effective_weight(self, value: float) -> None:
        self._effective_weight = float(value)
        self._refresh()

    @property
    def full(self) -> bool:
        """At its limit in this worker: it takes nothing more until something ends."""
        return 0 < self.limit <= self.active

    def __repr__(self) -> str:
        return (
            f"Backend({self.id!r}, w={self.weight}, ew={self.effective_weight:g}, "
            f"{self.admin}/{self.health}{', ejected' if self.ejected else ''}, "
            f"active={self.active})"
        )

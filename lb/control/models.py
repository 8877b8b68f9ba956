"""Request and response bodies of the control API: one definition for the server's validation,
the OpenAPI description, and the client's parsing.

Requests are strict: unknown fields are refused (422 naming the field), integers and booleans
must be JSON integers and booleans, not strings. Responses allow extra fields so an older
client keeps working against a newer ``lb``.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    StringConstraints,
    field_validator,
    model_validator,
)

from lb.model import AdminState, HealthState, parse_address

# What the API accepts as host:port. Stricter than the config file: no spaces, no paths.
ADDRESS_PATTERN = r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9][A-Za-z0-9._-]*):[0-9]{1,5}$"
# A backend id travels in URL paths: no "/", no spaces.
ID_PATTERN = r"^[A-Za-z0-9._:@+\[\]-]{1,128}$"
_ADDRESS = re.compile(ADDRESS_PATTERN)

MetaKey = Annotated[str, StringConstraints(min_length=1, max_length=64, strict=True)]
MetaValue = Annotated[str, StringConstraints(max_length=256, strict=True)]
BackendId = Annotated[str, StringConstraints(pattern=ID_PATTERN, strict=True)]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Response(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


def check_address(value: str) -> str:
    if not _ADDRESS.match(value):
        raise ValueError("must be host:port, e.g. 127.0.0.1:9004 or [::1]:9004")
    parse_address(value)  # the port range
    return value


# -- requests -----------------------------------------------------------------------------------


class AddBackend(_Request):
    address: Annotated[str, StringConstraints(max_length=300, strict=True)] = Field(
        description="host:port of the backend", examples=["127.0.0.1:9004"]
    )
    weight: StrictInt = Field(default=1, ge=0, le=1000, description="0 takes no new traffic")
    id: BackendId | None = Field(default=None, description="stable identity; default: the address")
    max_conn: StrictInt | None = Field(
        default=None,
        ge=0,
        le=1_000_000,
        description="concurrent requests (http) / connections (tcp); default: the pool's "
        "max_conn; 0: no limit",
    )
    metadata: dict[MetaKey, MetaValue] = Field(
        default_factory=dict, max_length=32, description="free-form labels (shown, persisted)"
    )

    _address = field_validator("address")(check_address)


def _patch_schema(schema: dict[str, Any]) -> None:
    # Give at least one field; null is accepted (as "unchanged") but not advertised.
    schema["minProperties"] = 1
    for prop in schema.get("properties", {}).values():
        variants = prop.pop("anyOf", None)
        if variants:
            prop.update(next(v for v in variants if v.get("type") != "null"))
            prop.pop("default", None)


class PatchBackend(_Request):
    model_config = ConfigDict(extra="forbid", frozen=True, json_schema_extra=_patch_schema)

    weight: StrictInt | None = Field(default=None, ge=0, le=1000)
    admin: AdminState | None = Field(
        default=None, description="ready: takes traffic; drain/maint: no new traffic"
    )
    max_conn: StrictInt | None = Field(
        default=None,
        ge=0,
        le=1_000_000,
        description="this backend's limit, for all workers together (0: no limit)",
    )

    @model_validator(mode="after")
    def _something(self) -> PatchBackend:
        if self.weight is None and self.admin is None and self.max_conn is None:
            raise ValueError("nothing to change: give weight, admin and/or max_conn")
        return self


class WaitQuery(_Request):
    timeout: float = Field(
        default=30.0, ge=0, le=3600, description="seconds to wait before answering anyway"
    )


class DeleteQuery(_Request):
    force: bool = Field(
        default=False,
        description="remove even if not removable, closing its connections in every worker",
    )


class DemandQuery(_Request):
    after: int | None = Field(
        default=None, ge=0, description="answer once the pool's seq is past this (long poll)"
    )
    timeout: float = Field(default=25.0, ge=0, le=60, description="seconds to wait at most")


class StatsQuery(_Request):
    window: float = Field(default=10.0, gt=0, le=60, description="seconds to average over")


# -- responses ----------------------------------------------------------------------------------


class ErrorBody(_Response):
    status: int
    field: str = Field(description='the offending field, or "body", "path", "config"')
    message: str


class ErrorResponse(_Response):
    error: ErrorBody


class BackendView(_Response):
    pool: str
    id: str
    address: str
    weight: int
    effective_weight: float
    max_conn: int = Field(
        default=0,
        description="concurrent requests (L7) / connections (L4), all workers (0: no limit)",
    )
    admin: AdminState
    health: HealthState
    ejected: bool
    ejected_for: float = Field(description="seconds left of a passive ejection")
    metadata: dict[str, str]
    dynamic: bool = Field(description="added at runtime (not declared in config.toml)")
    last_check: str
    active: int = Field(description="open connections (L4) / in-flight requests (L7), all workers")
    total: int = Field(description="connections (L4) / requests (L7) since the workers started")
    connect_failures: int
    errors: int
    bytes_in: int
    bytes_out: int
    removable: bool = Field(description="drain/maint and nothing active in any worker")


class PoolView(_Response):
    name: str
    strategy: str
    listeners: list[str]
    health_checks: bool
    drain_timeout: float
    backends: list[BackendView]


class PoolsResponse(_Response):
    pools: list[PoolView]


class BackendsResponse(_Response):
    pool: str
    backends: list[BackendView]


class AddResult(_Response):
    created: bool = Field(description="false: the same address/id was already registered")
    backend: BackendView


class WaitResult(_Response):
    pool: str
    id: str
    admin: AdminState
    removable: bool
    timed_out: bool
    active: int
    workers: int = Field(description="live workers")
    pending_workers: int = Field(description="workers that have not reported since the drain")
    waited: float
    reason: str


class RemoveResult(_Response):
    removed: BackendView
    forced: bool = Field(description="its connections were closed")


class Percentiles(_Response):
    p50: float
    p95: float
    p99: float
    samples: int


class BackendStats(_Response):
    address: str
    admin: AdminState
    health: HealthState
    eligible: bool
    weight: int
    in_flight: int
    connections: int
    total: int
    rate: float = Field(description="connections (L4) or requests (L7) per second")
    errors: int
    error_rate: float = Field(description="failed attempts / attempts over the window")
    latency_ms: Percentiles | None = Field(description="upstream latency; null without samples")


class PoolStats(_Response):
    in_flight: int
    queued: int = Field(default=0, description="waiting for a backend below its max_conn, now")
    held: int = Field(default=0, description="waiting because no backend is eligible, now")
    queue_ms: Percentiles | None = Field(
        default=None, description="waits in the queue over the window; null without samples"
    )
    connections: int
    total: int
    rate: float
    errors: int
    error_rate: float
    latency_ms: Percentiles | None
    backends_total: int
    backends_eligible: int
    backends: dict[str, BackendStats]


class StatsResponse(_Response):
    window: float = Field(description="requested window, seconds")
    measured: float = Field(description="seconds actually covered (less just after start)")
    pools: dict[str, PoolStats]


class PoolDemand(_Response):
    pool: str
    seq: int = Field(description="moves when the figures change; pass it as `after`")
    in_flight: int = Field(description="requests (http) / connections (tcp) at a backend")
    queued: int = Field(description="waiting for a backend below its max_conn")
    held: int = Field(description="waiting because no backend is eligible")
    demand: int = Field(description="in_flight + queued + held")
    eligible: int = Field(description="backends that may take traffic")
    backends: int = Field(description="backends in the pool, any state")


class ReloadResult(_Response):
    changes: list[str]
    restart_required: list[str] = Field(description="changed settings that apply on restart only")


class ListenerView(_Response):
    name: str
    bind: str
    mode: str = Field(description='"tcp" (L4 relay) or "http" (L7 proxy)')
    pool: str | None = Field(description="default pool (http: when no route matches)")
    pools: list[str] = Field(description="every pool it sends to: the default and its routes'")
    accepted: int = Field(description="client connections accepted, all workers")
    active: int = Field(description="client connections open now, all workers")
    rejected: int = Field(description="client connections refused at max_connections")
    requests: int = Field(description="http: requests received (0 for tcp)")
    responses: dict[str, int] = Field(description='http: responses by class, "1xx" to "5xx"')
    retries: int = Field(description="http: requests retried on another backend")
    bytes_in: int = Field(description="bytes from clients (tcp: counted when connections end)")
    bytes_out: int = Field(description="bytes to clients (tcp: counted when connections end)")
    workers_serving: int = Field(
        description="live workers that serve this listener (reported in their last snapshot)"
    )
    up: bool = Field(description="at least one live worker serves it; false: down")


class ListenersResponse(_Response):
    listeners: list[ListenerView]


class DiscardedStateFile(_Response):
    error: str = Field(description="why the state file could not be used")
    moved_to: str = Field(description="where it was moved (kept for inspection)")
    at: float = Field(description="when (Unix time, seconds)")


class Info(_Response):
    version: str
    pid: int
    config: str
    workers: int = Field(description="configured: [lb] workers (0: in-process)")
    workers_live: int = Field(description="worker processes running now (in-process: 1)")
    worker_restarts: int = Field(description="worker deaths since start (each restarted)")
    uptime: float
    control_socket: str
    state_file: str
    state_file_error: str | None = Field(
        description="why the last write of the state file failed; null once a write succeeds"
    )
    state_file_discarded: DiscardedStateFile | None = Field(
        default=None,
        description="the state file found at startup could not be used: it was moved aside "
        "and lb started from config.toml alone (its runtime changes are not applied)",
    )

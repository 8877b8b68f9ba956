"""The control API's operations and its route table.

Each route names its path, its request models (query and body) and its responses. The server
(``lb/control/server.py``) validates requests with exactly these models and the OpenAPI
description (``lb/control/openapi.py``) is generated from them, so the published description
cannot drift from what is enforced.

Every write validates everything first, then changes the state through ``ClusterState``
(which refuses a bad change whole), then waits until the state file holds the change before
it answers: a 2xx answer survives ``kill -9``.

The operations see two narrow interfaces, never the supervisor: the ``ControlPlane`` (state,
config, worker snapshots, broadcast, reload) and ``Services``, what the control service adds
(drains, stats windows, the event log, the state file). This module imports neither the
service nor the server, so the arrows point one way: service -> server -> api.
"""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel

import lb
from lb import persist
from lb.control.aggregate import QUEUE, StatsAggregator, WindowStats, merge_histograms, percentile
from lb.control.demand import DemandBoard
from lb.control.drain import DrainTracker
from lb.control.errors import ApiError
from lb.control.events import (
    KEEP,
    EventLog,
    EventsQuery,
    EventsResponse,
    PostEvents,
    PostEventsResult,
)
from lb.control.models import (
    AddBackend,
    AddResult,
    BackendsResponse,
    BackendStats,
    BackendView,
    DeleteQuery,
    DemandQuery,
    DiscardedStateFile,
    Info,
    ListenersResponse,
    ListenerView,
    PatchBackend,
    Percentiles,
    PoolDemand,
    PoolsResponse,
    PoolStats,
    PoolView,
    ReloadResult,
    RemoveResult,
    StatsQuery,
    StatsResponse,
    WaitQuery,
    WaitResult,
)
from lb.control.plane import ControlPlane
from lb.model import AdminState, HealthState
from lb.state import ManagedBackend

DRAIN_ACK_TIMEOUT = 2.0


class NoBody(BaseModel):
    """Calls that take no parameters accept an empty body or ``{}`` and refuse anything else."""

    model_config = {"extra": "forbid", "frozen": True}


class NoQuery(NoBody):
    pass


@dataclass(frozen=True)
class Call:
    path: dict[str, str]
    query: Any
    body: Any


Result = tuple[int, BaseModel]
Handler = Callable[["ControlApi", Call], Awaitable[Result]]


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: Handler
    summary: str
    responses: Mapping[int, tuple[type[BaseModel], str]]
    errors: Mapping[int, str] = field(default_factory=dict)
    query: type[BaseModel] = NoQuery
    body: type[BaseModel] | None = None
    write: bool = False  # changes state: on the admin TCP listener it needs the bearer token
    tag: str = "backends"

    @property
    def operation_id(self) -> str:
        return self.handler.__name__


class Services(Protocol):
    """What the API uses of the control service (``ControlService``), besides the plane."""

    @property
    def drains(self) -> DrainTracker: ...

    @property
    def stats(self) -> StatsAggregator: ...

    @property
    def events(self) -> EventLog: ...

    @property
    def demand(self) -> DemandBoard: ...

    @property
    def started(self) -> float: ...  # time.monotonic() when lb started

    @property
    def socket_path(self) -> Path: ...

    @property
    def state_path(self) -> Path: ...

    @property
    def state_file_error(self) -> str | None: ...

    @property
    def state_file_discarded(self) -> persist.Discarded | None: ...

    async def persisted(self) -> None:
        """Return once the current state is in the state file."""

    def close_backend(self, pool: str, backend_id: str) -> None:
        """Abort what every worker still has on the backend."""

    async def reload(self, cause: str) -> ReloadResult:
        """Re-read the config file (ApiError 422 when refused)."""


class ControlApi:
    def __init__(self, plane: ControlPlane, service: Services) -> None:
        self.plane = plane
        self.service = service
        self.state = plane.state

    # -- views ----------------------------------------------------------------------------------

    def _views(self, backends: list[ManagedBackend]) -> list[BackendView]:
        now = self.plane.now()
        counters = self.plane.totals().pools
        snaps = self.plane.snapshots()
        out = []
        for b in backends:
            c = counters.get(b.pool, {}).get(b.id, {})
            st = self.service.drains.status(b, snaps)
            out.append(
                BackendView.model_validate(
                    {
                        **b.view(now),
                        "max_conn": self.state.max_conn_of(b),
                        "active": c.get("active", 0),
                        "total": c.get("total", 0),
                        "connect_failures": c.get("connect_failures", 0),
                        "errors": c.get("errors", 0),
                        "bytes_in": c.get("bytes_in", 0),
                        "bytes_out": c.get("bytes_out", 0),
                        "removable": st.removable,
                    }
                )
            )
        return out

    def _view(self, b: ManagedBackend) -> BackendView:
        return self._views([b])[0]

    def _pool_view(self, name: str) -> PoolView:
        backends = self.state.pool(name)
        config = self.plane.config
        pc = config.pools[name]
        return PoolView(
            name=name,
            strategy=pc.strategy,
            listeners=[lc.name for lc in config.listeners if lc.pool == name],
            health_checks=self.state.initial_health(pc) is HealthState.CHECKING,
            drain_timeout=pc.drain_timeout,
            backends=self._views(list(backends.values())),
        )

    # -- operations -----------------------------------------------------------------------------

    async def info(self, call: Call) -> Result:
        s = self.service
        return 200, Info(
            version=lb.__version__,
            pid=os.getpid(),
            config=str(self.plane.config_path),
            workers=self.plane.config.lb.worker_count,
            workers_live=sum(1 for w in self.plane.workers if w.alive()),
            worker_restarts=self.plane.restarts(),
            uptime=round(time.monotonic() - s.started, 3),
            control_socket=str(s.socket_path),
            state_file=str(s.state_path),
            state_file_error=s.state_file_error,
            state_file_discarded=None
            if (gone := s.state_file_discarded) is None
            else DiscardedStateFile(error=gone.error, moved_to=str(gone.moved_to), at=gone.at),
        )

    async def list_listeners(self, call: Call) -> Result:
        counters = self.plane.totals().listeners
        live = self.plane.snapshots()  # the live workers' (a dead one serves nothing)
        views = []
        for lc in self.plane.config.listeners:
            c = counters.get(lc.name, {})
            serving = [snap.listeners[lc.name] for snap in live if lc.name in snap.listeners]
            pools = [lc.pool] if lc.pool is not None else []
            pools += [p for p in dict.fromkeys(r.pool for r in lc.routes) if p not in pools]
            classes = ("1xx", "2xx", "3xx", "4xx", "5xx") if lc.mode == "http" else ()
            views.append(
                ListenerView(
                    name=lc.name,
                    bind=lc.bind,
                    mode=lc.mode,
                    pool=lc.pool,
                    pools=pools,
                    accepted=c.get("accepted", 0),
                    active=sum(x.get("active", 0) for x in serving),
                    rejected=c.get("rejected", 0),
                    requests=c.get("requests", 0),
                    responses={k: c.get(f"responses_{k}", 0) for k in classes},
                    retries=c.get("retries", 0),
                    bytes_in=c.get("bytes_in", 0),
                    bytes_out=c.get("bytes_out", 0),
                    workers_serving=len(serving),
                    up=bool(serving),
                )
            )
        return 200, ListenersResponse(listeners=views)

    async def list_pools(self, call: Call) -> Result:
        return 200, PoolsResponse(pools=[self._pool_view(n) for n in self.state.pools])

    async def get_pool(self, call: Call) -> Result:
        self.state.pool(call.path["pool"])
        return 200, self._pool_view(call.path["pool"])

    async def list_backends(self, call: Call) -> Result:
        pool = call.path["pool"]
        backends = list(self.state.pool(pool).values())
        return 200, BackendsResponse(pool=pool, backends=self._views(backends))

    async def add_backend(self, call: Call) -> Result:
        body: AddBackend = call.body
        b, created = self.state.add_backend(
            call.path["pool"],
            body.address,
            body.weight,
            id=body.id,
            metadata=body.metadata,
            now=self.plane.now(),
            max_conn=body.max_conn,
        )
        await self.service.persisted()
        return (201 if created else 200), AddResult(created=created, backend=self._view(b))

    async def get_backend(self, call: Call) -> Result:
        return 200, self._view(self.state.backend(call.path["pool"], call.path["backend"]))

    async def patch_backend(self, call: Call) -> Result:
        body: PatchBackend = call.body
        pool = call.path["pool"]
        b = self.state.backend(pool, call.path["backend"])
        if body.weight is not None:
            self.state.set_weight(pool, b.id, body.weight)
        if body.max_conn is not None:
            self.state.set_max_conn(pool, b.id, body.max_conn)
        draining = body.admin is not None and body.admin is not AdminState.READY
        newly = draining and b.admin is AdminState.READY
        if body.admin is not None:
            self.state.set_admin(pool, b.id, body.admin, cause="api")
        await self.service.persisted()
        if newly:
            # Acknowledge a drain once every worker applied it: from the answer on, the
            # backend gets no new connection or request (bounded, should a worker hang).
            await self.service.drains.wait(
                lambda: self.state.backend(pool, b.id), DRAIN_ACK_TIMEOUT, applied=True
            )
        return 200, self._view(b)

    async def delete_backend(self, call: Call) -> Result:
        query: DeleteQuery = call.query
        pool = call.path["pool"]
        b = self.state.backend(pool, call.path["backend"])
        st = self.service.drains.status(b)
        if not st.removable and not query.force:
            how = (
                "set admin to drain, wait until removable (GET .../wait), then delete"
                if b.admin is AdminState.READY
                else f"{st.reason}; wait until removable (GET .../wait)"
            )
            raise ApiError(
                409,
                "backend",
                f"{pool}/{b.id} is not removable: {how}; or delete with force=true, "
                "which closes its connections",
            )
        view = self._view(b)
        forced = query.force and not st.removable
        if forced:
            # Before the removal, so every worker still knows the backend by this id.
            self.service.close_backend(pool, b.id)
        self.state.remove(pool, b.id)
        await self.service.persisted()
        return 200, RemoveResult(removed=view, forced=forced)

    async def wait_backend(self, call: Call) -> Result:
        query: WaitQuery = call.query
        pool = call.path["pool"]
        b = self.state.backend(pool, call.path["backend"])
        if b.admin is AdminState.READY:
            raise ApiError(
                409, "admin", f"{pool}/{b.id} is ready: set admin to drain or maint first"
            )
        t0 = self.plane.now()
        st = await self.service.drains.wait(lambda: self.state.backend(pool, b.id), query.timeout)
        b = self.state.backend(pool, b.id)
        return 200, WaitResult(
            pool=pool,
            id=b.id,
            admin=b.admin,
            removable=st.removable,
            timed_out=not st.removable and b.admin is not AdminState.READY,
            active=st.active,
            workers=st.workers,
            pending_workers=st.pending,
            waited=round(self.plane.now() - t0, 3),
            reason=st.reason,
        )

    async def pool_demand(self, call: Call) -> Result:
        query: DemandQuery = call.query
        pool = call.path["pool"]
        backends = self.state.pool(pool)  # 404 for an unknown pool
        d = await self.service.demand.wait(pool, query.after, query.timeout)
        now = self.plane.now()
        return 200, PoolDemand(
            pool=pool,
            seq=d.seq,
            in_flight=d.in_flight,
            queued=d.queued,
            held=d.held,
            demand=d.demand,
            eligible=sum(1 for b in backends.values() if b.eligible(now)),
            backends=len(backends),
        )

    async def stats(self, call: Call) -> Result:
        return 200, self._stats(call.query, None)

    async def pool_stats(self, call: Call) -> Result:
        pool = call.path["pool"]
        self.state.pool(pool)
        return 200, self._stats(call.query, pool)

    def _stats(self, query: StatsQuery, only: str | None) -> StatsResponse:
        span, window = self.service.stats.window(query.window)
        gauges = self.plane.totals().pools
        now = self.plane.now()
        pools: dict[str, PoolStats] = {}
        empty = WindowStats(0, 0.0, 0, 0, 0.0, None)
        for name, backends in self.state.pools.items():
            if only is not None and name != only:
                continue
            per: dict[str, BackendStats] = {}
            stats_of: list[WindowStats] = []
            in_flight = connections = eligible = 0
            for b in backends.values():
                g = gauges.get(name, {}).get(b.id, {})
                ws = window.get((name, b.id), empty)
                stats_of.append(ws)
                active = int(g.get("active", 0))
                conns = int(g.get("connections", active))
                is_eligible = b.eligible(now)
                eligible += is_eligible
                in_flight += active
                connections += conns
                per[b.id] = BackendStats(
                    address=b.address,
                    admin=b.admin,
                    health=b.health,
                    eligible=is_eligible,
                    weight=b.weight,
                    in_flight=active,
                    connections=conns,
                    total=ws.total,
                    rate=round(ws.rate, 3),
                    errors=ws.errors,
                    error_rate=round(ws.error_rate, 4),
                    latency_ms=_percentiles(ws.latency),
                )
            total = sum(s.total for s in stats_of)
            errors = sum(s.errors for s in stats_of)
            attempts = sum(s.attempts for s in stats_of)
            demand = self.service.demand.get(name)
            pools[name] = PoolStats(
                in_flight=in_flight,
                queued=demand.queued,
                held=demand.held,
                queue_ms=_percentiles(window.get((name, QUEUE), empty).latency),
                connections=connections,
                total=total,
                rate=round(sum(s.rate for s in stats_of), 3),
                errors=errors,
                error_rate=round(errors / attempts, 4) if attempts else 0.0,
                latency_ms=_percentiles(merge_histograms(s.latency for s in stats_of)),
                backends_total=len(backends),
                backends_eligible=eligible,
                backends=per,
            )
        return StatsResponse(window=query.window, measured=round(span, 3), pools=pools)

    async def reload(self, call: Call) -> Result:
        return 200, await self.service.reload("api")

    # -- scaling events (lb/control/events.py) --------------------------------------------------

    async def post_events(self, call: Call) -> Result:
        pool = call.path["pool"]
        self.state.pool(pool)  # 404 for an unknown pool
        body: PostEvents = call.body
        log = self.service.events
        stored = log.add(pool, body.source, list(body.events), time.time())
        return 201, PostEventsResult(stored=stored, last_seq=log.seq)

    async def list_events(self, call: Call) -> Result:
        query: EventsQuery = call.query
        if query.pool is not None:
            self.state.pool(query.pool)
        log = self.service.events
        return 200, EventsResponse(
            events=log.query(query.pool, query.since, query.limit), last_seq=log.seq
        )


def _percentiles(hist: tuple[int, ...] | None) -> Percentiles | None:
    if hist is None:
        return None
    n = sum(hist)
    p50, p95, p99 = (percentile(hist, q) for q in (0.5, 0.95, 0.99))
    if p50 is None or p95 is None or p99 is None:
        return None
    return Percentiles(
        p50=round(p50 * 1000, 3), p95=round(p95 * 1000, 3), p99=round(p99 * 1000, 3), samples=n
    )


_E404_POOL = {404: "unknown pool"}
_E404 = {404: "unknown pool or backend"}
_E422 = {422: "invalid field (named in the error)"}

ROUTES: tuple[Route, ...] = (
    Route(
        "GET",
        "/v1/info",
        ControlApi.info,
        "Version, uptime, paths and state-file health",
        {200: (Info, "about this lb")},
        tag="lb",
    ),
    Route(
        "GET",
        "/v1/listeners",
        ControlApi.list_listeners,
        "List listeners with their counters: connections, requests by status class, bytes",
        {200: (ListenersResponse, "every listener")},
        tag="lb",
    ),
    Route(
        "GET",
        "/v1/pools",
        ControlApi.list_pools,
        "List pools with their backends, states and counters",
        {200: (PoolsResponse, "every pool")},
        tag="pools",
    ),
    Route(
        "GET",
        "/v1/pools/{pool}",
        ControlApi.get_pool,
        "One pool with its backends",
        {200: (PoolView, "the pool")},
        _E404_POOL,
        tag="pools",
    ),
    Route(
        "GET",
        "/v1/pools/{pool}/backends",
        ControlApi.list_backends,
        "List a pool's backends: admin/health state, weights, in-flight, totals, errors",
        {200: (BackendsResponse, "the backends")},
        _E404_POOL,
    ),
    Route(
        "POST",
        "/v1/pools/{pool}/backends",
        ControlApi.add_backend,
        "Add a backend (idempotent for the same address and id). It starts in `checking` "
        "when the pool has health checks.",
        {201: (AddResult, "added"), 200: (AddResult, "already registered; nothing changed")},
        {**_E404_POOL, 409: "the id names another address", **_E422},
        body=AddBackend,
        write=True,
    ),
    Route(
        "GET",
        "/v1/pools/{pool}/backends/{backend}",
        ControlApi.get_backend,
        "One backend (by id or address)",
        {200: (BackendView, "the backend")},
        _E404,
    ),
    Route(
        "PATCH",
        "/v1/pools/{pool}/backends/{backend}",
        ControlApi.patch_backend,
        "Set the weight and/or the admin state (ready, drain, maint)",
        {200: (BackendView, "the backend after the change")},
        {**_E404, **_E422},
        body=PatchBackend,
        write=True,
    ),
    Route(
        "DELETE",
        "/v1/pools/{pool}/backends/{backend}",
        ControlApi.delete_backend,
        "Remove a backend. Refused (409) unless it is removable (drain/maint, nothing active "
        "in any worker); force=true closes its connections instead.",
        {200: (RemoveResult, "removed")},
        {**_E404, 409: "not removable (and not forced)", **_E422},
        query=DeleteQuery,
        write=True,
    ),
    Route(
        "GET",
        "/v1/pools/{pool}/backends/{backend}/wait",
        ControlApi.wait_backend,
        "Wait until a draining backend is removable, or the timeout passes; answers with "
        "the final counts (check `removable`)",
        {200: (WaitResult, "removable, or the timeout passed, or it was set ready again")},
        {**_E404, 409: "the backend is ready (not draining)", **_E422},
        query=WaitQuery,
    ),
    Route(
        "GET",
        "/v1/pools/{pool}/demand",
        ControlApi.pool_demand,
        "The pool's demand now: in flight + queued + held, summed over the workers. With "
        "`after` (a `seq` from an earlier answer) it waits until the figures change or "
        "`timeout` passes: the scaler's long poll.",
        {200: (PoolDemand, "the figures, and the seq to pass as `after` next time")},
        {**_E404_POOL, **_E422},
        query=DemandQuery,
        tag="stats",
    ),
    Route(
        "GET",
        "/v1/stats",
        ControlApi.stats,
        "Stats for the scaler, per pool and backend, over a recent window",
        {200: (StatsResponse, "stats")},
        _E422,
        query=StatsQuery,
        tag="stats",
    ),
    Route(
        "GET",
        "/v1/pools/{pool}/stats",
        ControlApi.pool_stats,
        "Stats of one pool over a recent window",
        {200: (StatsResponse, "stats of that pool only")},
        {**_E404_POOL, **_E422},
        query=StatsQuery,
        tag="stats",
    ),
    Route(
        "POST",
        "/v1/reload",
        ControlApi.reload,
        "Re-read config.toml: validated first (refused whole with the error), then applied. "
        "Backends added at runtime survive.",
        {200: (ReloadResult, "applied")},
        {
            422: "the config file is invalid (field `config`), or the admin token file "
            "cannot be used (field `admin.token_file`); nothing changed"
        },
        body=NoBody,
        write=True,
        tag="lb",
    ),
    Route(
        "POST",
        "/v1/pools/{pool}/events",
        ControlApi.post_events,
        "Store scaling events for a pool (the scaler's decisions and actions); lb keeps "
        f"the last {KEEP} over all pools, in memory",
        {201: (PostEventsResult, "stored")},
        {404: "unknown pool", 422: "invalid field"},
        body=PostEvents,
        write=True,
        tag="events",
    ),
    Route(
        "GET",
        "/v1/events",
        ControlApi.list_events,
        "Recent scaling events, oldest first",
        {200: (EventsResponse, "the events")},
        {404: "unknown pool", 422: "invalid query parameter"},
        query=EventsQuery,
        tag="events",
    ),
)

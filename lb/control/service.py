"""The control plane's services around ``ControlPlane``: the API server, draining, stats for the
scaler, the scaling-event log, metrics and the state file.

The supervisor owns one ``ControlService`` and builds it from the ``ControlPlane``, which is
all the service sees of the rest (state, config, worker snapshots, broadcast, config
changes). It calls the hooks (``backend_changed``, ``backend_removed``, ``worker_stats``,
``worker_demand``, ``worker_failure``, ``worker_gone``) and the lifecycle methods:

1. ``prepare()`` at the start of ``Supervisor.start()``, before any worker exists: it claims the
   control socket (so a second ``lb`` on the same config fails before it binds anything) and
   merges the state file into the pool state, so workers start with the registered backends
   (an unusable state file is moved aside and kept in ``state_file_discarded`` for
   ``GET /v1/info``);
2. ``serve()`` right after, so the API answers while the workers come up (calls are applied
   to the state and reach each worker with its first snapshot);
3. ``close()`` in ``Supervisor.stop()``: the API stops first, then pending state is written.

This module never touches data-plane sockets; it talks to workers through the plane.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from lb import persist, wire
from lb.config import Config
from lb.control.aggregate import StatsAggregator
from lb.control.api import ControlApi
from lb.control.demand import DemandBoard
from lb.control.drain import DrainTracker
from lb.control.errors import ApiError, ControlStartupError
from lb.control.events import EventLog
from lb.control.metrics import Metrics
from lb.control.models import ReloadResult
from lb.control.plane import ControlPlane, resolve_path
from lb.control.server import ControlServer
from lb.state import ManagedBackend
from lb.web import install_dashboard

__all__ = ["ControlService", "resolve_path"]

log = logging.getLogger("lb.control")


class ControlService:
    def __init__(self, plane: ControlPlane) -> None:
        self.plane = plane
        self.loop = plane.loop
        self.started = time.monotonic()
        self.config_path = plane.config_path
        self.socket_path = resolve_path(self.config_path, plane.config.lb.control_socket)
        self.state_path = resolve_path(self.config_path, plane.config.lb.state_file)
        self.stats = StatsAggregator()
        # Pool demand for the scaler's long poll (GET /v1/pools/{pool}/demand).
        self.demand = DemandBoard(lambda: [w.index for w in plane.workers if w.alive()])
        self.events = EventLog()  # the scaler's decisions and actions (lb/control/events.py)
        self.metrics = Metrics(plane, self.events)  # /metrics on the admin listener
        self.drains = DrainTracker(
            self.loop, plane.snapshots, self._drain_timeout, self.close_backend
        )
        self.persister: persist.Persister | None = None
        # The state file found unusable at startup and moved aside (GET /v1/info shows it).
        self.state_file_discarded: persist.Discarded | None = None
        self.server: ControlServer | None = None
        self._reload_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        plane.on_config.append(self._config_applied)
        plane.reload_checks.append(self._check_config)

    # -- lifecycle ------------------------------------------------------------------------------

    async def prepare(self) -> None:
        """Claim the control socket and merge the state file. Raises ControlStartupError."""
        config = self.plane.config
        self.server = ControlServer(ControlApi(self.plane, self), self.socket_path, config)
        self.metrics.install(self.server)
        install_dashboard(self.server)
        self.server.claim()
        try:
            saved = persist.read(self.state_path)
        except persist.StateFileError as exc:
            try:
                self.state_file_discarded = persist.discard(self.state_path, exc)
            except OSError as move:
                # Starting anyway would overwrite it with the config alone: the runtime
                # changes it may hold would be lost without a trace.
                raise ControlStartupError(
                    f"{exc}; and it cannot be moved aside ({move.strerror or move}): "
                    "fix or remove it"
                ) from None
            log.error(
                "%s; moved it to %s and started from the config alone",
                exc,
                self.state_file_discarded.moved_to,
                extra={"event": {"event": "state_file_discarded"}},
            )
            saved = None
        specs = persist.merge(config, saved)
        changes = self.plane.state.apply_config(config, specs, self.plane.now())
        if saved is not None:
            log.info(
                "state file %s: %d runtime change(s) applied",
                self.state_path,
                len(changes),
                extra={"event": {"event": "state_loaded", "changes": len(changes)}},
            )
        self.persister = persist.Persister(self.state_path, self._snapshot)
        self.persister.prime(saved)
        self.persister.request()

    async def serve(self) -> None:
        assert self.server is not None
        await self.server.start()

    async def close(self) -> None:
        if self.server is not None:
            await self.server.stop()
        self.drains.close()
        if self.persister is not None:
            await self.persister.close()

    # -- hooks from the supervisor --------------------------------------------------------------

    def backend_changed(self, pool: str, b: ManagedBackend, seq: int) -> None:
        self.drains.backend_changed(pool, b, seq)
        if self.persister is not None:
            self.persister.request()

    def backend_removed(self, pool: str, backend_id: str) -> None:
        self.drains.backend_removed(pool, backend_id)
        self.stats.forget((pool, backend_id))
        self.metrics.forget(pool, backend_id)
        if self.persister is not None:
            self.persister.request()

    def worker_stats(self, worker: int, restarts: int, snapshot: wire.Stats) -> None:
        self.stats.ingest(worker, snapshot, self.plane.now())
        self.metrics.ingest(worker, restarts, snapshot)
        self.drains.stats_updated()
        self.demand.update(
            worker,
            {n: (q["in_flight"], q["queued"], q["held"]) for n, q in snapshot.queues.items()},
        )

    def worker_demand(self, demand: wire.Demand) -> None:
        self.demand.update(demand.worker, demand.pools)

    def worker_gone(self, worker: int) -> None:
        self.demand.forget(worker)

    def worker_failure(self, failure: wire.Failure) -> None:
        self.metrics.failure(failure)  # errors by kind, for /metrics

    # -- helpers for the API --------------------------------------------------------------------

    async def persisted(self) -> None:
        """Wait until the current state is on disk. A write that fails is a 503 naming
        ``lb.state_file``: the change is applied, but a 2xx promises that it survives a
        restart (the next write that succeeds saves it, with everything since)."""
        if self.persister is not None:
            try:
                await self.persister.flush()
            except OSError as exc:
                raise ApiError(
                    503,
                    "lb.state_file",
                    f"applied, but not saved: {exc.strerror or exc}; a restart would lose "
                    "it. Make the state file's folder writable; the next change saves "
                    "the whole state",
                ) from None

    @property
    def state_file_error(self) -> str | None:
        return self.persister.error if self.persister is not None else None

    def close_backend(self, pool: str, backend_id: str) -> None:
        """Tell every worker to abort what still uses the backend (drain_timeout expired, or a
        forced delete)."""
        self.plane.broadcast(wire.CloseBackend(pool, backend_id))

    def _snapshot(self) -> persist.SavedState:
        return persist.dump(self.plane.config, self.plane.state)

    def _drain_timeout(self, pool: str) -> float:
        pc = self.plane.config.pools.get(pool)
        return pc.drain_timeout if pc is not None else 30.0

    def _check_config(self, config: Config) -> None:
        if self.server is not None:
            self.server.check_config(config)  # the admin token file (ApiError 422)

    def _config_applied(self, config: Config) -> None:
        if self.server is not None:
            self.server.reload(config)  # token rotation

    # -- reload ---------------------------------------------------------------------------------

    def reload_soon(self, cause: str) -> None:
        """Reload in the background (SIGHUP); a refusal is logged with its reason."""

        async def run() -> None:
            with contextlib.suppress(ApiError):
                await self.reload(cause)

        task = self.loop.create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def reload(self, cause: str) -> ReloadResult:
        """``ControlPlane.reload``, answered once the state file holds the result."""
        async with self._reload_lock:
            result = self.plane.reload(cause)
            await self.persisted()
            return result

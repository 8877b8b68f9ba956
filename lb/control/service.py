"""The control plane's services around ``ClusterState``: the API server, draining, stats for the
scaler, the state file and hot reload.

The supervisor owns one ``ControlService``. It calls the hooks (``backend_changed``,
``backend_removed``, ``worker_stats``) and the lifecycle methods:

1. ``prepare()`` at the start of ``Supervisor.start()``, before any worker exists: it claims the
   control socket (so a second ``lb`` on the same config fails before it binds anything) and
   merges the state file into the pool state, so workers start with the registered backends;
2. ``serve()`` right after, so the API answers while the workers come up (calls are applied
   to the state and reach each worker with its first snapshot);
3. ``close()`` in ``Supervisor.stop()``: the API stops first, then pending state is written.

This module never touches data-plane sockets; it talks to workers through the supervisor.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lb import persist
from lb.config import Config, ConfigError, load_config
from lb.control.drain import DrainTracker
from lb.control.errors import ApiError
from lb.control.models import ReloadResult
from lb.control.stats import StatsAggregator
from lb.metrics import Metrics
from lb.model import parse_address
from lb.state import ManagedBackend
from lb.web import install_dashboard

if TYPE_CHECKING:
    from lb.control.server import ControlServer
    from lb.supervisor import Supervisor, WorkerHandle

log = logging.getLogger("lb.control")


def resolve_path(config_path: str | os.PathLike[str], value: str) -> Path:
    """``value`` from the config, relative to the config file's folder unless absolute."""
    p = Path(value)
    return p if p.is_absolute() else Path(config_path).resolve().parent / p


class ControlService:
    def __init__(self, sup: Supervisor) -> None:
        self.sup = sup
        self.loop = sup.loop
        self.started = time.monotonic()
        self.config_path = Path(sup.config_path).resolve()
        self.socket_path = resolve_path(self.config_path, sup.config.lb.control_socket)
        self.state_path = resolve_path(self.config_path, sup.config.lb.state_file)
        self.stats = StatsAggregator()
        self.metrics = Metrics(sup)  # /metrics on the admin listener (lb/metrics.py)
        self.drains = DrainTracker(
            self.loop, self.live_snapshots, self._drain_timeout, self._close_backend
        )
        self.persister: persist.Persister | None = None
        self.server: ControlServer | None = None
        self._reload_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()

    # -- lifecycle ------------------------------------------------------------------------------

    async def prepare(self) -> None:
        """Claim the control socket and merge the state file. Raises ControlStartupError."""
        from lb.control.server import ControlServer

        self.server = ControlServer(self, self.socket_path, self.sup.config)
        self.metrics.install(self.server)
        install_dashboard(self.server)
        self.server.claim()
        try:
            saved = persist.read(self.state_path)
        except persist.StateFileError as exc:
            moved = persist.set_aside(self.state_path)
            log.error("%s; moved it to %s and started from the config alone", exc, moved)
            saved = None
        specs = persist.merge(self.sup.config, saved)
        changes = self.sup.state.apply_config(self.sup.config, specs, self.loop.time())
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

    def worker_stats(self, w: WorkerHandle, msg: Mapping[str, Any]) -> None:
        self.stats.ingest(w.index, msg, self.loop.time())
        self.metrics.ingest(w.index, w.restarts, msg)
        self.drains.stats_updated()

    # -- helpers for the API --------------------------------------------------------------------

    def live_snapshots(self) -> list[Mapping[str, Any]]:
        """The latest snapshot of every worker that is alive ({} when it has not sent one)."""
        out: list[Mapping[str, Any]] = []
        for w in self.sup.workers:
            if w.plane is not None:
                out.append(w.plane.snapshot())
                continue
            bus = w.bus
            closed = getattr(bus, "closed", None)
            if bus is None or (isinstance(closed, asyncio.Future) and closed.done()):
                continue  # dead (or being restarted): its connections died with it
            out.append(w.stats)
        return out

    async def persisted(self) -> None:
        """Wait until the current state is on disk (write errors are logged, not raised)."""
        if self.persister is not None:
            with contextlib.suppress(OSError):
                await self.persister.flush()

    @property
    def state_file_error(self) -> str | None:
        return self.persister.error if self.persister is not None else None

    def close_backend(self, pool: str, backend_id: str) -> None:
        self._close_backend(pool, backend_id)

    def _snapshot(self) -> persist.SavedState:
        return persist.dump(self.sup.config, self.sup.state)

    def _drain_timeout(self, pool: str) -> float:
        pc = self.sup.config.pools.get(pool)
        return pc.drain_timeout if pc is not None else 30.0

    def _close_backend(self, pool: str, backend_id: str) -> None:
        self.sup.broadcast({"type": "close_backend", "pool": pool, "id": backend_id})

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
        """Re-read the config file; refuse it whole (ApiError 422) or apply it."""
        async with self._reload_lock:
            old = self.sup.config
            try:
                try:
                    new = load_config(self.config_path)
                except ConfigError as exc:
                    raise ApiError(422, "config", str(exc)) from None
                self._check_binds(old, new)
            except ApiError as exc:
                log.error(
                    "reload (%s) refused; the running config is unchanged:\n%s",
                    cause,
                    exc.message,
                    extra={"event": {"event": "reload_refused", "field": exc.field}},
                )
                raise
            restart = restart_required(old, new)
            specs = persist.merge(new, persist.dump(old, self.sup.state))
            changes = self.sup.apply_config(new, specs)
            changes += config_changes(old, new)
            if self.server is not None:
                self.server.reload(new)
            await self.persisted()
            log.info(
                "reload (%s): %d change(s)%s",
                cause,
                len(changes),
                f"; restart needed for {', '.join(restart)}" if restart else "",
                extra={"event": {"event": "reload", "changes": changes}},
            )
            return ReloadResult(changes=changes, restart_required=restart)

    def _check_binds(self, old: Config, new: Config) -> None:
        """A new listener address that cannot be bound refuses the reload before anything
        changes (workers bind with SO_REUSEPORT, as this probe does)."""
        current = {lc.bind for lc in old.listeners}
        for i, lc in enumerate(new.listeners):
            if lc.bind in current:
                continue
            host, port = parse_address(lc.bind)
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            with socket.socket(family, socket.SOCK_STREAM) as s:
                try:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                    s.bind((host, port))
                except OSError as exc:
                    raise ApiError(
                        422,
                        f"listeners[{i}].bind",
                        f"{self.config_path}: listeners[{i}].bind: cannot bind {lc.bind}: "
                        f"{exc.strerror or exc}; the running config is unchanged",
                    ) from None


def restart_required(old: Config, new: Config) -> list[str]:
    out = [
        f"lb.{name}"
        for name in ("workers", "control_socket", "state_file", "log_format", "log_level")
        if getattr(old.lb, name) != getattr(new.lb, name)
    ]
    if old.admin.bind != new.admin.bind:
        out.append("admin.bind")
    return out


def config_changes(old: Config, new: Config) -> list[str]:
    """Readable lines for listener and pool-setting changes (backends are listed by the state)."""
    out: list[str] = []
    before = {lc.name: lc for lc in old.listeners}
    after = {lc.name: lc for lc in new.listeners}
    out += [f"listener {n} added ({after[n].bind})" for n in after if n not in before]
    out += [f"listener {n} removed" for n in before if n not in after]
    out += [f"listener {n} changed" for n in after if n in before and before[n] != after[n]]
    for name, pc in new.pools.items():
        prev = old.pools.get(name)
        if prev is None:
            continue
        a = prev.model_dump(exclude={"backends"})
        b = pc.model_dump(exclude={"backends"})
        out += [f"pool {name} {k}: {a[k]!r} -> {b[k]!r}" for k in b if a.get(k) != b[k]]
    if old.lb.grace != new.lb.grace:
        out.append(f"lb.grace: {old.lb.grace:g}s -> {new.lb.grace:g}s")
    return out

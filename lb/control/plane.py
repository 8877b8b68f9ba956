"""The seam between the supervisor and the control plane's services.

Owns: the current config and the authoritative ``ClusterState``; the workers as the services
see them (their latest stats snapshots); the sequence-numbered broadcast to the workers and
the wire messages built from the state; and config changes: ``apply_config`` and, next to
it, ``reload`` (re-read the file, refuse it whole or apply it). Never does: spawn, signal or
restart a process (the supervisor does), serve HTTP or write the state file (the control
service does), or act on what a worker sends (the supervisor routes it).

Theory of operation
-------------------
The supervisor builds one ``ControlPlane`` and hands it to everything else on the control
side: the control service, its API, the metrics. None of them sees the ``Supervisor``. The
supervisor keeps the list of its workers in ``workers`` (each a ``WorkerLink``), routes their
stats snapshots into them, and turns ``ClusterState``'s change reports into deltas with
``broadcast(BackendUpdate(...))``.

Every frame to the workers is stamped with ``seq``, which ``broadcast`` increments; a worker
echoes the last one it applied in its snapshots (``lb/control/drain.py`` relies on that).
``frame`` stamps a message with the current ``seq`` without a new number: what a worker
that starts receives (its config and a full snapshot), so that it knows everything up to
``seq``.

A reload is refused whole, before anything changes, when the file does not validate, when a
new listener address cannot be bound, or when a ``reload_checks`` callback refuses it (the
control server checks the admin token file there). A new config becomes current in
``apply_config``: the state first (backends added, changed, removed, each reported as
usual), then ``config``, then the ``on_config`` callbacks (objects derived from the config
on this side: the health checker's tasks, the admin token), then the workers get the config
and a full snapshot, in that order, so that a listener a worker adds never sees an empty
pool.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from lb import persist, wire
from lb.config import Config, ConfigError, load_config
from lb.control.errors import ApiError
from lb.control.models import ReloadResult
from lb.state import BackendSpec, ClusterState, ManagedBackend

log = logging.getLogger("lb.control")


def resolve_path(config_path: str | os.PathLike[str], value: str) -> Path:
    """``value`` from the config, relative to the config file's folder unless absolute."""
    p = Path(value)
    return p if p.is_absolute() else Path(config_path).resolve().parent / p


class WorkerLink(Protocol):
    """One worker as the control plane sees it (the supervisor's ``WorkerHandle``)."""

    @property
    def index(self) -> int: ...

    @property
    def restarts(self) -> int: ...

    def send(self, frame: bytes) -> None:
        """Queue a frame body (``wire.encode``) to the worker; dropped if it is gone."""

    def latest_stats(self) -> wire.Stats | None:
        """Its latest snapshot (None before the first); a dead worker's last one."""

    def alive(self) -> bool:
        """False while it is dead or being restarted: its connections died with it."""


@dataclass
class Totals:
    """The latest snapshot of every worker, summed counter by counter (a counter no worker
    sent is missing: read it with ``.get(name, 0)``)."""

    listeners: dict[str, dict[str, int]] = field(default_factory=dict)
    pools: dict[str, dict[str, dict[str, int]]] = field(default_factory=dict)


def backend_entry(b: ManagedBackend, now: float, max_conn: int = 0) -> wire.BackendEntry:
    """How a backend travels to the workers (``ejected`` is computed now, so a readmission
    must be sent again: ``HealthManager`` does). ``max_conn`` is the limit in force
    (``ClusterState.max_conn_of``): a change of the pool's default reaches the workers with the
    snapshot that follows every new config."""
    return wire.BackendEntry(
        id=b.id,
        address=b.address,
        weight=b.weight,
        effective_weight=b.effective_weight,
        admin=b.admin,
        health=b.health,
        ejected=b.ejected(now),
        max_conn=max_conn,
    )


class ControlPlane:
    def __init__(
        self,
        config: Config,
        config_path: str | os.PathLike[str],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.config = config
        self.config_path = Path(config_path).resolve()
        self.loop = loop
        self.state = ClusterState(config, now=loop.time())
        self.workers: Sequence[WorkerLink] = ()
        self.seq = 0
        # Called with the new config once it is current (see the module docstring).
        self.on_config: list[Callable[[Config], None]] = []
        # Called with a reload's new config before anything changes: raise ApiError to
        # refuse it whole (what the config file names besides itself: the admin token).
        self.reload_checks: list[Callable[[Config], None]] = []
        # Called with (old, new) after every check passed, before anything changes; one may
        # still refuse it with an ApiError (the supervisor binds new listeners' sockets here,
        # last, so that a refusal leaves nothing bound).
        self.before_apply: list[Callable[[Config, Config], None]] = []

    def now(self) -> float:
        return self.loop.time()

    # -- to the workers -------------------------------------------------------------------------

    def broadcast(self, msg: wire.ToWorker) -> None:
        """Send ``msg`` to every worker, stamped with the next sequence number."""
        self.seq += 1
        frame = wire.encode(msg, self.seq)
        for w in self.workers:
            w.send(frame)

    def frame(self, msg: wire.ToWorker) -> bytes:
        """``msg`` stamped with the current sequence number, for a worker that starts."""
        return wire.encode(msg, self.seq)

    def backend_update(self, pool: str, b: ManagedBackend) -> wire.BackendUpdate:
        return wire.BackendUpdate(pool, backend_entry(b, self.now(), self.state.max_conn_of(b)))

    def pools_snapshot(self) -> wire.PoolsSnapshot:
        now = self.now()
        return wire.PoolsSnapshot(
            {
                name: tuple(
                    backend_entry(b, now, self.state.max_conn_of(b)) for b in backends.values()
                )
                for name, backends in self.state.pools.items()
            }
        )

    def new_config(self) -> wire.NewConfig:
        return wire.NewConfig(self.config)

    # -- from the workers -----------------------------------------------------------------------

    def snapshots(self) -> list[wire.Stats]:
        """The latest snapshot of every live worker (an empty one before its first)."""
        return [w.latest_stats() or wire.Stats(worker=w.index) for w in self.workers if w.alive()]

    def totals(self) -> Totals:
        """The latest snapshot of every worker, summed (a dead worker's last one counts until
        its replacement reports)."""
        out = Totals()
        for w in self.workers:
            snap = w.latest_stats()
            if snap is None:
                continue
            for name, counters in snap.listeners.items():
                _add_into(out.listeners.setdefault(name, {}), counters)
            for pool, backends in snap.pools.items():
                pacc = out.pools.setdefault(pool, {})
                for bid, bc in backends.items():
                    _add_into(pacc.setdefault(bid, {}), bc)
        return out

    def restarts(self) -> int:
        return sum(w.restarts for w in self.workers)

    # -- config ---------------------------------------------------------------------------------

    def apply_config(
        self, config: Config, backends: Mapping[str, Sequence[BackendSpec]]
    ) -> list[str]:
        """Make a validated config current; ``backends`` is the merged membership
        (``lb/persist.py``). Returns one readable line per backend change. Workers get the
        config, then a full snapshot: they start new listeners only after that snapshot, so
        a new listener never sees an empty pool."""
        changes = self.state.apply_config(config, backends, self.now())
        self.config = config
        for callback in self.on_config:
            callback(config)
        self.broadcast(self.new_config())
        self.broadcast(self.pools_snapshot())
        return changes

    def reload(self, cause: str) -> ReloadResult:
        """Re-read the config file; refuse it whole (ApiError 422, nothing changed) or apply it.
        Backends added at runtime survive (``persist.merge``)."""
        old = self.config
        try:
            try:
                new = load_config(self.config_path)
            except ConfigError as exc:
                raise ApiError(422, "config", str(exc)) from None
            for check in self.reload_checks:
                check(new)
            for prepare in self.before_apply:
                prepare(old, new)
        except ApiError as exc:
            log.error(
                "reload (%s) refused; the running config is unchanged:\n%s",
                cause,
                exc.message,
                extra={"event": {"event": "reload_refused", "field": exc.field}},
            )
            raise
        restart = restart_required(old, new)
        specs = persist.merge(new, persist.dump(old, self.state))
        changes = self.apply_config(new, specs)
        changes += config_changes(old, new)
        log.info(
            "reload (%s): %d change(s)%s",
            cause,
            len(changes),
            f"; restart needed for {', '.join(restart)}" if restart else "",
            extra={"event": {"event": "reload", "changes": changes}},
        )
        return ReloadResult(changes=changes, restart_required=restart)


def _add_into(acc: dict[str, int], counters: wire.ListenerCounters | wire.BackendCounters) -> None:
    for k, v in wire.counter_items(counters):
        acc[k] = acc.get(k, 0) + v


def restart_required(old: Config, new: Config) -> list[str]:
    out = [
        f"lb.{name}"
        for name in ("control_socket", "state_file", "log_format", "log_level")
        if getattr(old.lb, name) != getattr(new.lb, name)
    ]
    # A change of the worker count applies at once (workers are started or retired), but not
    # to or from 0, which runs the data plane inside the supervisor.
    a, b = old.lb.worker_count, new.lb.worker_count
    if a != b and 0 in (a, b):
        out.append("lb.workers")
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
    n_old, n_new = old.lb.worker_count, new.lb.worker_count
    if n_old != n_new and n_old > 0 and n_new > 0:
        out.append(f"lb.workers: {n_old} -> {n_new}")
    if old.lb.grace != new.lb.grace:
        out.append(f"lb.grace: {old.lb.grace:g}s -> {new.lb.grace:g}s")
    if old.lb.cpu_map != new.lb.cpu_map:
        out.append(f"lb.cpu_map: {old.lb.cpu_map!r} -> {new.lb.cpu_map!r}")
    return out

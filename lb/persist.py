"""Runtime changes on disk: the state file, and how it is merged with ``config.toml``.

Theory of operation
-------------------
The state file records what the control API changed at runtime: backends added and removed,
weights, admin states and metadata. It never records health (a backend is checked again after
a restart). It is written atomically (temporary file, fsync, rename, fsync of the folder), so a
crash at any moment leaves either the old or the new file, never a torn one.

``dump(config, state)`` describes the current state relative to the config it was built from;
``merge(config, saved)`` turns a (possibly newer) config plus that description into the
backends every pool should have. The same rules serve startup (config file + state file) and
hot reload (new config file + the state in memory):

* a backend declared in the config keeps its runtime admin state and metadata; its runtime
  weight and ``max_conn`` are kept unless the config's value was edited since (then the
  file wins);
* a config backend removed at runtime stays removed while the config still lists it;
* a backend added at runtime (``dynamic``) survives as long as its pool exists; if the config
  now declares the same id, the config's declaration takes over;
* a backend that the config stopped declaring goes away, as do pools the config dropped.

``Persister`` writes in the background and coalesces bursts: ``flush()`` returns once a write
that includes every change made before the call is on disk (group commit), which is what the
control API awaits before it answers a write call.

This module owns the file format. It never touches sockets or worker state.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from lb.config import Config
from lb.model import AdminState
from lb.state import BackendSpec, ClusterState

log = logging.getLogger("lb.persist")

FORMAT_VERSION = 1


class _Saved(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class SavedBackend(_Saved):
    id: str
    address: str
    weight: int = Field(ge=0, le=1000)
    admin: AdminState = AdminState.READY
    metadata: dict[str, str] = Field(default_factory=dict)
    dynamic: bool = False
    config_weight: int | None = None  # the config's weight when this was saved (config backends)
    max_conn: int | None = Field(default=None, ge=0, le=1_000_000)  # its own limit
    config_max_conn: int | None = None  # the config's max_conn when this was saved


class RemovedBackend(_Saved):
    id: str
    address: str


class SavedPool(_Saved):
    backends: list[SavedBackend] = Field(default_factory=list)
    removed: list[RemovedBackend] = Field(default_factory=list)


class SavedState(_Saved):
    version: int
    saved_at: float = 0.0
    pools: dict[str, SavedPool] = Field(default_factory=dict)


class StateFileError(Exception):
    """The state file exists but cannot be used."""


def dump(config: Config, state: ClusterState) -> SavedState:
    pools: dict[str, SavedPool] = {}
    for name, backends in state.pools.items():
        pool_cfg = config.pools.get(name)
        declared = {(b.id or b.address): b for b in pool_cfg.backends} if pool_cfg else {}
        saved = []
        for b in backends.values():
            bc = declared.get(b.id)
            declared_here = bc is not None and bc.address == b.address
            config_weight = bc.weight if bc is not None and declared_here else None
            config_max_conn = bc.max_conn if bc is not None and declared_here else None
            saved.append(
                SavedBackend(
                    id=b.id,
                    address=b.address,
                    weight=b.weight,
                    admin=b.admin,
                    metadata=dict(b.metadata),
                    dynamic=b.dynamic,
                    config_weight=None if b.dynamic else config_weight,
                    max_conn=b.max_conn,
                    config_max_conn=None if b.dynamic else config_max_conn,
                )
            )
        removed = [
            RemovedBackend(id=bid, address=bc.address)
            for bid, bc in declared.items()
            if bid not in backends
        ]
        pools[name] = SavedPool(backends=saved, removed=removed)
    return SavedState(version=FORMAT_VERSION, pools=pools)


def merge(config: Config, saved: SavedState | None) -> dict[str, list[BackendSpec]]:
    """The backends each pool of ``config`` should have (rules in the module docstring)."""
    out: dict[str, list[BackendSpec]] = {}
    for name, pool_cfg in config.pools.items():
        sp = saved.pools.get(name) if saved is not None else None
        tombstones = {(r.id, r.address) for r in sp.removed} if sp else set()
        by_id = {b.id: b for b in sp.backends} if sp else {}
        specs: list[BackendSpec] = []
        declared: set[str] = set()
        for bc in pool_cfg.backends:
            bid = bc.id or bc.address
            declared.add(bid)
            if (bid, bc.address) in tombstones:
                continue
            s = by_id.get(bid)
            if s is None or s.address != bc.address:
                specs.append(BackendSpec(bid, bc.address, bc.weight, max_conn=bc.max_conn))
                continue
            weight = s.weight if s.config_weight == bc.weight else bc.weight
            max_conn = s.max_conn if s.config_max_conn == bc.max_conn else bc.max_conn
            specs.append(
                BackendSpec(bid, bc.address, weight, s.admin, dict(s.metadata), max_conn=max_conn)
            )
        if sp is not None:
            specs.extend(
                BackendSpec(s.id, s.address, s.weight, s.admin, dict(s.metadata), True, s.max_conn)
                for s in sp.backends
                if s.dynamic and s.id not in declared
            )
        out[name] = specs
    if saved is not None:
        for name, sp in saved.pools.items():
            lost = [b.id for b in sp.backends if b.dynamic]
            if name not in config.pools and lost:
                log.warning(
                    "pool %s is no longer in the config; dropping its runtime backends: %s",
                    name,
                    ", ".join(lost),
                )
    return out


def encode(saved: SavedState) -> bytes:
    doc = saved.model_dump(mode="json")
    doc["saved_at"] = round(time.time(), 3)
    return orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)


def read(path: Path) -> SavedState | None:
    """The saved state, or None when there is no file yet. Raises StateFileError."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StateFileError(f"{path}: cannot read the state file: {exc.strerror}") from None
    try:
        saved = SavedState.model_validate(orjson.loads(raw))
    except (orjson.JSONDecodeError, ValidationError) as exc:
        raise StateFileError(f"{path}: not a valid state file: {exc}") from None
    if saved.version != FORMAT_VERSION:
        raise StateFileError(
            f"{path}: state file format {saved.version} is not supported "
            f"(this lb reads {FORMAT_VERSION})"
        )
    return saved


def write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so that a crash leaves the old or the new file whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


@dataclass(frozen=True)
class Discarded:
    """A state file found unusable at startup and moved aside: lb started from the config
    alone. Kept for ``GET /v1/info``, since the log line alone is easy to miss."""

    error: str  # why it could not be used (StateFileError's message)
    moved_to: Path
    at: float  # time.time() when it was moved


def set_aside(path: Path, at: float | None = None) -> Path:
    """Move an unusable state file out of the way (kept for the operator to inspect), to
    ``NAME.bad-TIMESTAMP`` (local time ``at``, default now). Raises OSError."""
    stamp = time.strftime("%Y%m%dT%H%M%S", time.localtime(at))
    dest = path.with_name(f"{path.name}.bad-{stamp}")
    os.replace(path, dest)
    return dest


def discard(path: Path, error: StateFileError) -> Discarded:
    """``set_aside`` with the record of what happened. Raises OSError."""
    at = time.time()
    return Discarded(str(error), set_aside(path, at), at)


class Persister:
    """Writes ``snapshot()`` to ``path`` in the background; bursts coalesce into one write."""

    def __init__(self, path: Path, snapshot: Callable[[], SavedState]) -> None:
        self.path = path
        self._snapshot = snapshot
        self._loop = asyncio.get_running_loop()
        self._wanted = 0  # generation requested
        self._written = 0  # generation known to be on disk
        self._last: dict[str, Any] | None = None
        self._task: asyncio.Task[None] | None = None
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self.writes = 0
        self.error: str | None = None

    def prime(self, saved: SavedState | None) -> None:
        """What is on disk already (from ``read``), so an unchanged state is not rewritten."""
        self._last = None if saved is None else saved.model_dump(mode="json", exclude={"saved_at"})

    def request(self) -> int:
        """Note that the state changed; returns the generation that a write will cover."""
        self._wanted += 1
        if self._task is None or self._task.done():
            self._task = self._loop.create_task(self._run())
        return self._wanted

    async def flush(self) -> None:
        """Return when every change made before this call is on disk. Raises OSError."""
        gen = self.request()
        if self._written >= gen:
            return
        fut: asyncio.Future[None] = self._loop.create_future()
        self._waiters.append((gen, fut))
        await fut

    async def _run(self) -> None:
        while self._written < self._wanted:
            gen = self._wanted
            doc = self._snapshot().model_dump(mode="json", exclude={"saved_at"})
            error: OSError | None = None
            if doc != self._last:
                data = encode(SavedState.model_validate(doc))
                try:
                    await self._loop.run_in_executor(None, write_atomic, self.path, data)
                except OSError as exc:
                    error = exc
                    self.error = f"{self.path}: {exc.strerror or exc}"
                    log.error("cannot write the state file %s", self.error)
                else:
                    self._last = doc
                    self.writes += 1
                    self.error = None
            self._written = gen
            still: list[tuple[int, asyncio.Future[None]]] = []
            for want, fut in self._waiters:
                if want > gen:
                    still.append((want, fut))
                elif not fut.done():
                    if error is not None:
                        fut.set_exception(OSError(error.errno, self.error))
                    else:
                        fut.set_result(None)
            self._waiters = still

    async def close(self) -> None:
        """Write what is pending (used at shutdown)."""
        with contextlib.suppress(OSError):
            await self.flush()
        if self._task is not None:
            await self._task

"""The data plane: one per worker process (or one in-process with ``workers = 0``).

A ``DataPlane`` receives config and pool state from the supervisor over a ``Bus``, binds its
own listening sockets, relays traffic, and reports counter snapshots about once a second and
failures as they happen. It is never the source of truth for membership, health or admin
state: it only applies what the supervisor sends.

Run as a process: ``python -m lb.worker --bus-fd FD --index I`` (the supervisor does this).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import ctypes
import functools
import gc
import logging
import os
import signal
import socket
import ssl
import sys
from typing import Any, assert_never, cast

import uvloop

from lb import wire
from lb.balancing import background
from lb.bus import Bus, PipeBus
from lb.config import Config, ListenerConfig
from lb.logs import setup_logging
from lb.model import AdminState, Backend
from lb.proxy.edge import UpstreamTls, build_upstream_tls
from lb.proxy.listener import Listener
from lb.proxy.pool import PoolRuntime, retire_strategy
from lb.sockets import parse_fds_argument, receive_sockets, socket_key

log = logging.getLogger("lb.worker")

STATS_INTERVAL = 1.0
QUEUE_CHECK = 0.2  # seconds between looks for queued clients that left (PoolRuntime.drop_gone)
SOCKET_WAIT = 5.0  # seconds a new listener waits for the supervisor's socket


class DataPlane:
    def __init__(
        self,
        index: int,
        bus: Bus | None = None,
        sockets: dict[str, socket.socket] | None = None,
    ) -> None:
        self.index = index
        self.bus: Bus | None = bus
        # Listening sockets the supervisor handed over, by key (lb/sockets.py); a listener
        # takes its own when it starts. Without any (a data plane run on its own), a listener
        # binds one itself.
        self.sockets: dict[str, socket.socket] = dict(sockets or {})
        self.handed_sockets = sockets is not None
        self._socket_waiters: dict[str, asyncio.Future[None]] = {}
        self.loop = asyncio.get_running_loop()
        # Long strategy work (the first build of a big consistent_hash ring) runs in slices
        # between this loop's I/O, not in one go (lb/balancing/background.py).
        background.set_scheduler(background.run_on(self.loop))
        self.config: Config | None = None
        self.pools: dict[str, PoolRuntime] = {}
        self.listeners: list[Listener] = []
        self.configured = self.loop.create_future()
        self.stopping = False
        self._stats_handle: asyncio.TimerHandle | None = None
        self._queue_handle: asyncio.TimerHandle | None = None
        self.seq = 0  # last supervisor message applied; echoed in stats (lb/control/drain.py)
        self.started = False
        self.retired: list[Listener] = []  # removed by a reload; their connections finish
        self._pending: list[ListenerConfig] = []  # added by a reload; start after the snapshot
        self._report_pending = False
        # TLS to backends, by pool (tls = true); the listeners share this dict, updated in place
        self.upstream_tls: dict[str, UpstreamTls] = {}
        self._tls_logged: dict[tuple[str, str], float] = {}  # (pool, backend) -> last log line
        self._demand_pending: set[str] = set()  # pools whose demand changed (lb/wire.py Demand)
        # A snapshot applied in slices (PoolRuntime.apply_snapshot): the pools still at it,
        # its sequence number, and the messages that came meanwhile, applied after it in
        # their order.
        self._applying: set[str] = set()
        self._applying_seq = 0
        self._starting = False
        # gc.freeze() before the first snapshot and once each snapshot is whole (a worker
        # process sets it; a data plane inside the supervisor or a test does not): the
        # objects then alive (modules, config, 10,000 Backend objects) are long-lived, and a
        # full collection that scans them all stalls the loop for tens of milliseconds
        # (measured: 25 ms of CPU in a slice of a first snapshot of 10,000; benchmarks.stall).
        self.freeze_gc = False
        self._backlog: collections.deque[tuple[int, wire.ToWorker]] = collections.deque()

    # -- messages from the supervisor -------------------------------------------------------

    def on_frame(self, frame: bytes) -> None:
        """A frame body from the bus (``lb/wire.py``)."""
        try:
            seq, msg = wire.decode_to_worker(frame)
        except wire.WireError as exc:
            log.error("worker %d: ignored a bad message from the supervisor: %s", self.index, exc)
            return
        self.on_message(seq, msg)

    def on_message(self, seq: int, msg: wire.ToWorker) -> None:
        """Apply ``msg``, or queue it behind a snapshot still being applied in slices. A
        snapshot that comes while one is applied, with nothing queued in between, supersedes
        it: the pools it names drop the older one's remaining work."""
        if self._applying and (self._backlog or not isinstance(msg, wire.PoolsSnapshot)):
            self._backlog.append((seq, msg))
            return
        self._apply(seq, msg)

    @property
    def applying(self) -> bool:
        """A snapshot is being applied in slices; messages wait behind it."""
        return bool(self._applying)

    def _apply(self, seq: int, msg: wire.ToWorker) -> None:
        if isinstance(msg, wire.PoolsSnapshot):
            self._apply_snapshot(seq, msg)
            return
        self.seq = seq
        match msg:
            case wire.NewConfig():
                self._apply_config(msg.config)
            case wire.BackendUpdate():
                pool = self.pools.get(msg.pool)
                if pool is not None:
                    pool.apply_backend(msg.backend)
                    if msg.backend.admin is not AdminState.READY:
                        # A drain: pooled idle upstream connections close at once, and the
                        # supervisor hears at once what is still active here.
                        b = pool.backends.get(msg.backend.id)
                        if b is not None:
                            for listener in self.listeners:
                                listener.close_idle_upstreams(b)
                        self._report_soon()
            case wire.CloseBackend():
                self._close_backend(msg.pool, msg.id)
            case wire.RemoveBackend():
                pool = self.pools.get(msg.pool)
                if pool is not None:
                    gone = pool.backends.get(msg.id)
                    if gone is not None:
                        for listener in self.listeners:
                            listener.close_idle_upstreams(gone)
                    pool.remove(msg.id)
            case _:
                assert_never(msg)

    def _apply_snapshot(self, seq: int, msg: wire.PoolsSnapshot) -> None:
        """Every pool's backends, whole. A big pool applies it in slices (the others serve
        meanwhile, and it serves from the set it had): the snapshot counts as applied (its
        ``seq`` in stats, ``configured``, new listeners started) once every pool has it."""
        self._applying_seq = seq
        if self.freeze_gc and not self.configured.done():
            gc.freeze()
        self._starting = True  # pools that finish at once call back: _pool_applied waits
        try:
            for name, entries in msg.pools.items():
                pool = self.pools.get(name)
                if pool is not None:
                    pool.apply_snapshot(entries, functools.partial(self._pool_applied, name))
                    if pool.applying:
                        self._applying.add(name)
                    else:
                        self._applying.discard(name)  # an older one it superseded
        finally:
            self._starting = False
        if not self._applying:
            self._snapshot_applied()

    def _pool_applied(self, name: str) -> None:
        """One pool has the snapshot whole (called by ``PoolRuntime.apply_snapshot``)."""
        if self._starting:
            return  # applied at once: _apply_snapshot goes on
        self._applying.discard(name)
        if not self._applying:
            self._snapshot_applied()

    def _snapshot_applied(self) -> None:
        self.seq = max(self.seq, self._applying_seq)
        if self.freeze_gc:
            gc.freeze()
        if not self.configured.done():
            self.configured.set_result(None)
        if self._pending:
            pending, self._pending = self._pending, []
            self.loop.create_task(self._start_listeners(pending))
        while self._backlog and not self._applying:
            seq, msg = self._backlog.popleft()
            self._apply(seq, msg)

    def _apply_config(self, config: Config) -> None:
        self.config = config
        # Each worker enforces its share of a backend's max_conn (lb.proxy.pool.worker_share).
        workers = max(1, config.lb.worker_count)
        for name, pool_cfg in config.pools.items():
            existing = self.pools.get(name)
            if existing is None:
                pool = self.pools[name] = PoolRuntime(name, pool_cfg, workers)
                pool.on_success = self._report_success
                pool.on_idle = self._backend_idle
                pool.on_demand = self._demand_changed
            else:
                existing.reconfigure(pool_cfg, workers)
        for gone in [name for name in self.pools if name not in config.pools]:
            # Connections in flight keep their Backend objects; a big ring is freed in slices.
            retire_strategy(self.pools.pop(gone).strategy)
        tls, errors = build_upstream_tls(config.pools, self.upstream_tls)
        for pool_name, exc in errors:
            log.error(
                "worker %d: pool %s: TLS files unusable, keeping the previous ones: %s",
                self.index,
                pool_name,
                exc,
            )
        self.upstream_tls.clear()
        self.upstream_tls.update(tls)
        if self.started:
            self._plan_listeners(config)

    def _plan_listeners(self, config: Config) -> None:
        """A reload: keep listeners whose socket is unchanged and reconfigure them (every object
        derived from their config is rebuilt, so open connections see the new settings from
        their next request), stop accepting on the others (their connections finish), and note
        the new ones."""
        wanted = {lc.name: lc for lc in config.listeners}
        kept: list[Listener] = []
        self.retired = [lst for lst in self.retired if lst.active]
        for listener in self.listeners:
            lc = wanted.get(listener.config.name)
            same_socket = lc is not None and lc.bind == listener.config.bind
            if lc is not None and same_socket and lc.mode == listener.config.mode:
                listener.reconfigure(lc)
                kept.append(listener)
            else:
                listener.stop_accepting()
                self.retired.append(listener)
        names = {lst.config.name for lst in kept}
        self.listeners = kept
        keys = {socket_key(lc) for lc in config.listeners}
        for key in [k for k in self.sockets if k not in keys]:
            self.sockets.pop(key).close()
        self._pending = [lc for lc in config.listeners if lc.name not in names]

    async def _start_listeners(self, configs: list[ListenerConfig]) -> None:
        for lc in configs:
            try:
                await self._start_listener(lc)
            except OSError as exc:
                log.error("worker %d: cannot bind listener %s: %s", self.index, lc.name, exc)

    async def _start_listener(self, lc: ListenerConfig) -> None:
        listener = Listener(lc, self.pools, self.loop, self._report_failure, self.upstream_tls)
        await listener.start(await self._socket_for(lc))
        self.listeners.append(listener)

    # -- listening sockets from the supervisor ------------------------------------------------

    def add_sockets(self, items: list[tuple[str, socket.socket]]) -> None:
        for key, sock in items:
            old = self.sockets.pop(key, None)
            if old is not None:
                old.close()
            self.sockets[key] = sock
            waiter = self._socket_waiters.get(key)
            if waiter is not None and not waiter.done():
                waiter.set_result(None)

    def watch_socket_channel(self, channel: socket.socket) -> None:
        """Sockets for listeners that a reload adds arrive here (lb/sockets.py)."""
        channel.setblocking(False)

        def readable() -> None:
            try:
                items = receive_sockets(channel)
            except EOFError:
                self.loop.remove_reader(channel.fileno())
                channel.close()
                return
            self.add_sockets(items)

        self.loop.add_reader(channel.fileno(), readable)

    async def _socket_for(self, lc: ListenerConfig) -> socket.socket | None:
        """The supervisor's socket for ``lc``: already here, or on its way over the socket
        channel (a reload sends it before the config, but the two travel apart)."""
        key = socket_key(lc)
        sock = self.sockets.pop(key, None)
        if sock is not None or not self.handed_sockets:
            return sock
        waiter = self._socket_waiters[key] = self.loop.create_future()
        try:
            async with asyncio.timeout(SOCKET_WAIT):
                await waiter
        except TimeoutError:
            log.warning("worker %d: no socket for listener %s; binding one", self.index, key)
        finally:
            del self._socket_waiters[key]
        return self.sockets.pop(key, None)

    def _close_backend(self, pool: str, backend_id: str) -> None:
        """drain_timeout expired or a forced delete: abort what still uses the backend here
        (L4 connections relayed to it, L7 connections with a request in flight to it)."""
        runtime = self.pools.get(pool)
        found = runtime.backends.get(backend_id) if runtime is not None else None
        if found is None:
            self._report_soon()
            return
        target: Backend = found
        closed = 0
        for listener in [*self.listeners, *self.retired]:
            listener.close_idle_upstreams(target)
            for conn in list(listener.connections):
                # Identity, not id: the same id may name a backend in another pool.
                if conn.uses(target):
                    conn.abort()
                    closed += 1
        if closed:
            log.info(
                "worker %d: closed %d connection(s) to %s/%s",
                self.index,
                closed,
                pool,
                backend_id,
            )
        self._report_soon()

    def _backend_idle(self, backend: Backend) -> None:
        """A draining backend's last connection or request in this worker ended."""
        self._report_soon()

    def _demand_changed(self, pool: PoolRuntime) -> None:
        """A pool's demand rose above twice what was last reported: the supervisor hears
        at once (one message per loop iteration), for a scaler that follows demand."""
        if not self._demand_pending:
            self.loop.call_soon(self._send_demand)
        self._demand_pending.add(pool.name)

    def _send_demand(self) -> None:
        names, self._demand_pending = self._demand_pending, set()
        demand = {
            name: (p.in_flight, p.waiting - p.held, p.held)
            for name in names
            if (p := self.pools.get(name)) is not None
        }
        if demand:
            self._send(wire.Demand(self.index, demand))

    def _report_soon(self) -> None:
        """Send a stats snapshot now (once per loop iteration), not at the next tick."""
        if not self._report_pending:
            self._report_pending = True
            self.loop.call_soon(self._report_now)

    def _report_now(self) -> None:
        self._report_pending = False
        self._send(self.snapshot())

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        await self.configured
        assert self.config is not None
        for lc in self.config.listeners:
            await self._start_listener(lc)
        self.started = True
        self._stats_handle = self.loop.call_later(STATS_INTERVAL, self._send_stats)
        self._queue_handle = self.loop.call_later(QUEUE_CHECK, self._check_queues)
        self._send(wire.Ready(self.index))

    async def stop(self, grace: float) -> None:
        """Stop accepting, let open connections finish for up to ``grace`` seconds."""
        if self.stopping:
            return
        self.stopping = True
        listeners = [*self.listeners, *self.retired]
        for listener in listeners:
            listener.stop_accepting()
        open_conns = sum(listener.active for listener in listeners)
        if open_conns:
            log.info(
                "worker %d: waiting up to %.1fs for %d connection(s)", self.index, grace, open_conns
            )
            try:
                async with asyncio.timeout(grace):
                    await asyncio.gather(*(listener.wait_idle() for listener in listeners))
            except TimeoutError:
                left = sum(listener.active for listener in listeners)
                log.warning("worker %d: grace expired, closing %d connection(s)", self.index, left)
                for listener in listeners:
                    listener.abort_all()
        for listener in listeners:
            listener.close()
        if self._stats_handle is not None:
            self._stats_handle.cancel()
        if self._queue_handle is not None:
            self._queue_handle.cancel()
        self._send_stats(reschedule=False)

    # -- reporting --------------------------------------------------------------------------

    def _send(self, msg: wire.ToSupervisor) -> None:
        if self.bus is not None:
            self.bus.send(wire.encode(msg))

    def _report_failure(
        self, pool: str, backend: Backend, kind: str, exc: BaseException | None
    ) -> None:
        """Passive health: ``kind`` is "connect", "reset" (before a response), "timeout"
        (no response in time) or "5xx"."""
        backend.failure_streak += 1
        if isinstance(exc, ssl.SSLError):
            self._log_tls_failure(pool, backend, exc)
        self._send(wire.Failure(self.index, pool, backend.id, kind, _describe(exc)))

    def _log_tls_failure(self, pool: str, backend: Backend, exc: ssl.SSLError) -> None:
        """TLS to a backend failed (a certificate that does not verify, most often): say why,
        at most every 10 s per backend, since every request to it fails the same way."""
        key = (pool, backend.id)
        now = self.loop.time()
        if now - self._tls_logged.get(key, -1e9) < 10.0:
            return
        self._tls_logged[key] = now
        log.error(
            "worker %d: pool %s: TLS to backend %s failed: %s",
            self.index,
            pool,
            backend.address,
            _describe(exc),
            extra={"event": {"event": "backend_tls_failure", "pool": pool, "id": backend.id}},
        )

    def _report_success(self, pool: str, backend: Backend, failures: int) -> None:
        """Passive health: ``backend`` succeeded after ``failures`` reported failures."""
        self._send(wire.Success(self.index, pool, backend.id, failures))

    def snapshot(self) -> wire.Stats:
        listeners = {lst.config.name: _listener_counters(lst) for lst in self.listeners}
        backends: dict[str, dict[str, wire.BackendCounters]] = {
            name: {
                b.id: {
                    "active": b.active,
                    "total": b.total,
                    "connect_failures": b.connect_failures,
                    "errors": b.responses[5],  # 5xx answers (L7)
                    "bytes_in": b.bytes_in,
                    "bytes_out": b.bytes_out,
                    # For /metrics (lb/control/metrics.py): existing counters, flattened.
                    "retries": b.retries,
                    "responses_1xx": b.responses[1],
                    "responses_2xx": b.responses[2],
                    "responses_3xx": b.responses[3],
                    "responses_4xx": b.responses[4],
                    "responses_5xx": b.responses[5],
                    "latency_us": int(b.latency_sum * 1e6),  # the latency histogram's sum
                }
                for b in pool.backends.values()
            }
            for name, pool in self.pools.items()
        }
        # Upstream response times (L7) for the scaler's percentiles (lb/control/aggregate.py).
        latency = {
            name: {b.id: tuple(b.latency) for b in pool.backends.values() if any(b.latency)}
            for name, pool in self.pools.items()
        }
        queues: dict[str, wire.PoolCounters] = {
            name: {
                "in_flight": pool.in_flight,
                "queued": pool.waiting - pool.held,
                "held": pool.held,
                "queue_full": pool.queue_full,
                "queue_timeouts": pool.queue_timeouts,
                "hold_timeouts": pool.hold_timeouts,
                "waited": pool.waited,
                "wait_us": int(pool.queue_wait_sum * 1e6),
                "retry_budget_exhausted": pool.budget_exhausted,
            }
            for name, pool in self.pools.items()
        }
        for pool in self.pools.values():
            pool.demand_reported()  # a rise from these figures is news again
        return wire.Stats(
            worker=self.index,
            seq=self.seq,
            listeners=listeners,
            pools=backends,
            latency=latency,
            queues=queues,
            queue_wait={
                name: tuple(pool.queue_wait)
                for name, pool in self.pools.items()
                if any(pool.queue_wait)
            },
        )

    def _check_queues(self) -> None:
        for pool in self.pools.values():
            if pool.waiting:
                pool.drop_gone()
        self._queue_handle = self.loop.call_later(QUEUE_CHECK, self._check_queues)

    def _send_stats(self, reschedule: bool = True) -> None:
        self._send(self.snapshot())
        if reschedule and not self.stopping:
            self._stats_handle = self.loop.call_later(STATS_INTERVAL, self._send_stats)


def _listener_counters(lst: Listener) -> wire.ListenerCounters:
    """A listener's counters for the stats snapshot (flat integers; ``active`` is a gauge)."""
    out: wire.ListenerCounters = {
        "accepted": lst.accepted,
        "active": lst.active,
        "rejected": lst.rejected,
        "connect_failures": lst.connect_failures,
        "no_backend": lst.no_backend,
        "idle_timeouts": lst.idle_timeouts,
        "bytes_in": lst.bytes_in,
        "bytes_out": lst.bytes_out,
    }
    ctx = lst.http
    if ctx is not None:
        out["requests"] = ctx.requests
        out["retries"] = ctx.retries
        out["bytes_in"] = ctx.bytes_in
        out["bytes_out"] = ctx.bytes_out
        out["responses_1xx"] = ctx.responses[1]
        out["responses_2xx"] = ctx.responses[2]
        out["responses_3xx"] = ctx.responses[3]
        out["responses_4xx"] = ctx.responses[4]
        out["responses_5xx"] = ctx.responses[5]
    if lst.edge is not None:
        out.update(cast(wire.ListenerCounters, lst.edge_counters.snapshot()))
    return out


def _describe(exc: BaseException | None) -> str:
    if exc is None:
        return ""
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"certificate verification failed: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS error: {exc.reason or exc}"
    if isinstance(exc, OSError) and exc.errno and exc.errno > 0:
        # asyncio replaces strerror with "Connect call failed (addr)"; errno says what failed.
        return os.strerror(exc.errno).lower()
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return type(exc).__name__


# -- process entry point ------------------------------------------------------------------


async def _worker_main(bus_fd: int, index: int, sockets: str, channel_fd: int | None) -> int:
    loop = asyncio.get_running_loop()
    sock = socket.socket(fileno=bus_fd)
    plane = DataPlane(index, sockets=parse_fds_argument(sockets))
    plane.freeze_gc = True
    if channel_fd is not None:
        plane.watch_socket_channel(socket.socket(fileno=channel_fd))

    done: asyncio.Future[str] = loop.create_future()

    def on_bus_closed() -> None:
        # The supervisor is gone: stop gracefully rather than run unmanaged.
        if not done.done():
            done.set_result("supervisor gone")

    bus = await PipeBus.connect(sock, plane.on_frame, on_bus_closed)
    plane.bus = bus

    def on_signal(sig: signal.Signals) -> None:
        if not done.done():
            done.set_result(sig.name)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    # A stop request or a lost supervisor during startup (before the config arrived) ends the
    # worker too: it must never wait forever for a config nobody will send.
    starting = asyncio.ensure_future(plane.start())
    waiters: list[asyncio.Future[Any]] = [starting, done]
    await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    if not starting.done():
        starting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await starting
        log.info("worker %d stopping during startup (%s)", index, done.result())
        bus.close()
        return 0
    try:
        starting.result()
    except OSError as exc:
        bus.send(wire.encode(wire.Fatal(index, f"cannot bind: {exc}")))
        await asyncio.sleep(0.05)
        bus.close()
        return 2
    why = await done
    log.info("worker %d stopping (%s)", index, why)
    assert plane.config is not None
    await plane.stop(plane.config.lb.grace)
    bus.close()
    return 0


def _die_with_parent(supervisor: int | None) -> None:
    """Ask Linux for SIGTERM when the supervisor dies, even by SIGKILL: a worker never runs
    unmanaged. (The closed bus tells us too; this also covers a bus that never connected.)
    ``supervisor`` is its pid, to tell whether it died before we asked: comparing the parent
    with 1 would be wrong where the supervisor itself is pid 1 (a container without init)."""
    if sys.platform != "linux":
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    parent = os.getppid()
    orphaned = parent == 1 if supervisor is None else parent != supervisor
    if orphaned:  # the parent died before we asked
        os.kill(os.getpid(), signal.SIGTERM)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="lb.worker")
    p.add_argument("--bus-fd", type=int, required=True)
    p.add_argument("--index", type=int, required=True)
    p.add_argument("--sockets", default="{}", help="inherited listening sockets: {key: fd}")
    p.add_argument("--socket-channel-fd", type=int, default=None)
    p.add_argument("--log-format", default="text")
    p.add_argument("--log-level", default="info")
    p.add_argument("--supervisor-pid", type=int, default=None)
    args = p.parse_args(argv)
    setup_logging(args.log_format, args.log_level, f"worker {args.index}")
    _die_with_parent(args.supervisor_pid)
    # The loop is created here, after the process started, never inherited from a parent.
    return uvloop.run(_worker_main(args.bus_fd, args.index, args.sockets, args.socket_channel_fd))


if __name__ == "__main__":
    sys.exit(main())

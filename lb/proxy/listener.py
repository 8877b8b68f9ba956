"""A listening socket in one worker: binds with SO_REUSEPORT, tracks its connections.

Every worker binds its own socket for every listener, so the kernel spreads new connections
across workers. The listener counts what it accepted, enforces ``max_connections``, owns the
access log, and lets graceful shutdown wait for its connections to finish.

A reload that keeps the listener (same name, bind and mode) calls :meth:`Listener.reconfigure`
with the new config: the config object is replaced, and every object derived from it is
rebuilt or reconfigured in place (the access log, the http listener's ``HttpContext``, the
socket's backlog). Code that reads a setting reads it from ``self.config`` or the context when
it needs it, so open connections see the new values from their next request or check on.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections.abc import Callable
from typing import Protocol, cast

from lb.config import ListenerConfig
from lb.model import Backend
from lb.proxy.accesslog import AccessLog
from lb.proxy.context import HttpContext, TimedConnection
from lb.proxy.edge import Edge, EdgeApp, EdgeCounters, UpstreamTls
from lb.proxy.http import HttpClientProtocol, HttpFactory
from lb.proxy.pool import PoolRuntime
from lb.proxy.tcp import TcpClientProtocol
from lb.sockets import bind_socket

log = logging.getLogger("lb.listener")

TICK = 1.0  # seconds between access-log writes (and tcp idle checks, at most)


class Connection(Protocol):
    def abort(self) -> None: ...

    def uses(self, backend: Backend) -> bool:
        """Whether this connection is relaying to ``backend`` right now (forced removal)."""
        ...


FailureReporter = Callable[[str, Backend, str, BaseException | None], None]


class Listener:
    """One listener in one worker. ``pool`` may be swapped by a reload."""

    def __init__(
        self,
        config: ListenerConfig,
        pools: dict[str, PoolRuntime],
        loop: asyncio.AbstractEventLoop,
        report: FailureReporter,
        upstream_tls: dict[str, UpstreamTls] | None = None,
    ) -> None:
        self.config = config
        # The worker's own dict: a reload updates it in place, so lookups here stay current.
        self.pools = pools
        self.loop = loop
        self._report = report
        self.server: asyncio.Server | None = None
        self.connections: set[Connection] = set()
        # Connections admitted and refused by admit() (tcp); an http listener's connections
        # are admitted by its HttpContext, which counts its own (see ``accepted``).
        self._accepted = 0
        self._rejected = 0
        self.connect_failures = 0
        self.no_backend = 0
        self.idle_timeouts = 0
        # Bytes from clients and to clients, tcp mode (added when a connection ends; http
        # listeners count them per request in HttpContext).
        self.bytes_in = 0
        self.bytes_out = 0
        self._drained: asyncio.Future[None] | None = None
        self.access = AccessLog()
        self._tick_handle: asyncio.TimerHandle | None = None
        # Shared state of an http listener's connections (routing, upstream pool, sweep).
        self.http: HttpContext | None = None
        # TLS and PROXY protocol (lb/proxy/edge.py): None on a plain listener. Its counters
        # outlive reloads; the pools' TLS contexts are the worker's, updated in place.
        self.edge_counters = EdgeCounters()
        self.edge: Edge | None = None
        self.upstream_tls: dict[str, UpstreamTls] = upstream_tls if upstream_tls is not None else {}

    async def start(self, sock: socket.socket | None = None) -> None:
        """Serve on ``sock`` (the supervisor's, handed over), or on a socket of our own."""
        config = self.config
        if sock is None:
            sock = bind_socket(config.bind, config.backlog)
        else:
            sock.setblocking(False)
        inner: Callable[[], asyncio.Protocol]
        try:
            self.edge = self._new_edge(config)
            self.access.reconfigure(config.access_log)
            if config.mode == "http":
                # (an http listener's connections are all HttpClientProtocol: they time out)
                conns = cast(set[TimedConnection], self.connections)
                ctx = self.http = HttpContext(config, self.loop, conns, self.access, self.pools)
                ctx.on_empty = self._check_drained
                # (Not an asyncio.Protocol subclass, so that it can be compiled; see
                # lb/proxy/http.pxd.) The compiled factory makes a plain connection in C.
                factory = cast(Callable[[], asyncio.BaseProtocol], HttpFactory(self, ctx))
            else:
                inner = lambda: TcpClientProtocol(self)  # noqa: E731
                app = cast(Callable[[], EdgeApp], inner)

                def factory() -> asyncio.BaseProtocol:
                    # (read per connection: a reload may turn TLS or PROXY on or off)
                    edge = self.edge
                    return inner() if edge is None else edge.accept(app)

            # backlog: uvloop listens again on the socket it is given, with 100 unless told.
            self.server = await self.loop.create_server(factory, sock=sock, backlog=config.backlog)
        except BaseException:
            sock.close()
            self.access.close()
            raise
        self._tick_handle = self.loop.call_later(TICK, self._tick)

    def _new_edge(self, config: ListenerConfig) -> Edge | None:
        if config.tls is None and not config.proxy_protocol:
            return None
        return Edge(config, self.loop, self.edge_counters)

    def reconfigure(self, config: ListenerConfig) -> None:
        """A reload kept this listener (same name, bind, mode): apply the rest of ``config``."""
        try:
            # New certificates for new handshakes; open connections keep theirs.
            self.edge = self._new_edge(config)
        except (OSError, ValueError, ssl.SSLError) as exc:
            # The supervisor read these files a moment ago; they changed since. The old
            # certificates keep serving.
            log.error(
                "listener %s: TLS files unusable, keeping the previous ones: %s", config.name, exc
            )
        old, self.config = self.config, config
        try:
            self.access.reconfigure(config.access_log)
        except OSError as exc:
            log.error(
                "listener %s: cannot open access log %s: %s", config.name, config.access_log, exc
            )
        if self.http is not None:
            self.http.reconfigure(config)
        if config.backlog != old.backlog and self.server is not None:
            for sock in self.server.sockets:
                sock.listen(config.backlog)  # a listening socket takes a new backlog in place

    def _tick(self) -> None:
        """About once a second: write the access log; tcp relays idle too long close (http
        connections have their own sweep, ``HttpContext.sweep``, at a finer interval)."""
        self.access.flush()
        if self.http is None:
            now = self.loop.time()
            idle_timeout = self.config.idle_timeout
            for conn in list(self.connections):
                cast(TcpClientProtocol, conn).check_idle(now, idle_timeout)
        interval = min(TICK, max(0.05, self.config.idle_timeout / 4))
        self._tick_handle = self.loop.call_later(interval, self._tick)

    @property
    def idle_timeout(self) -> float:
        """tcp relays and http tunnels: closed after this long without a byte."""
        return self.config.idle_timeout

    def admit(self, conn: Connection) -> bool:
        if len(self.connections) >= self.config.max_connections:
            self._rejected += 1
            return False
        self._accepted += 1
        self.connections.add(conn)
        return True

    def release(self, conn: Connection) -> None:
        self.connections.discard(conn)
        if not self.connections:
            self._check_drained()

    def _check_drained(self) -> None:
        """No connection is open any more: a ``wait_idle`` is over."""
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    @property
    def accepted(self) -> int:
        """Connections admitted (by admit(), and by the http context's admit)."""
        return self._accepted + (self.http.accepted if self.http is not None else 0)

    @property
    def rejected(self) -> int:
        """Connections refused at ``max_connections``."""
        return self._rejected + (self.http.rejected if self.http is not None else 0)

    @property
    def pool(self) -> PoolRuntime:
        """The listener's pool (tcp), or its default pool (http; check ``config.pool`` first)."""
        assert self.config.pool is not None
        return self.pools[self.config.pool]

    def report_failure(
        self, pool: PoolRuntime, backend: Backend, kind: str, exc: BaseException | None
    ) -> None:
        self._report(pool.name, backend, kind, exc)

    def stop_accepting(self) -> None:
        if self.server is not None:
            self.server.close()
        if self.http is not None:
            # Idle keep-alive connections close now; busy ones after their response.
            self.http.stopping = True
            for conn in list(self.connections):
                if isinstance(conn, HttpClientProtocol):
                    conn.close_when_idle()

    def close_idle_upstreams(self, backend: Backend) -> int:
        """A backend started draining or was removed: close its pooled idle connections."""
        return self.http.upstreams.close_backend(backend) if self.http is not None else 0

    async def wait_idle(self) -> None:
        if not self.connections:
            return
        self._drained = self.loop.create_future()
        await self._drained

    def abort_all(self) -> None:
        for conn in list(self.connections):
            conn.abort()

    def close(self) -> None:
        """Release timers, pooled upstream connections and the access log (after stopping)."""
        if self._tick_handle is not None:
            self._tick_handle.cancel()
            self._tick_handle = None
        if self.http is not None:
            self.http.close()
        self.access.close()

    @property
    def active(self) -> int:
        return len(self.connections)

"""A listening socket in one worker: binds with SO_REUSEPORT, tracks its connections.

Every worker binds its own socket for every listener, so the kernel spreads new connections
across workers. The listener counts what it accepted, enforces ``max_connections`` and lets
graceful shutdown wait for its connections to finish.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol, cast

from lb.config import ListenerConfig
from lb.model import Backend, parse_address
from lb.proxy.pool import PoolRuntime

if TYPE_CHECKING:
    from lb.proxy.http import HttpContext

log = logging.getLogger("lb.listener")


class Connection(Protocol):
    def abort(self) -> None: ...


FailureReporter = Callable[[str, Backend, str, BaseException | None], None]


def bind_socket(address: str, backlog: int, reuse_port: bool = True) -> socket.socket:
    host, port = parse_address(address)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(backlog)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class Listener:
    """One listener in one worker. ``pool`` may be swapped by a reload."""

    def __init__(
        self,
        config: ListenerConfig,
        pools: dict[str, PoolRuntime],
        loop: asyncio.AbstractEventLoop,
        report: FailureReporter,
    ) -> None:
        self.config = config
        # The worker's own dict: a reload updates it in place, so lookups here stay current.
        self.pools = pools
        self.loop = loop
        self._report = report
        self.server: asyncio.Server | None = None
        self.connections: set[Connection] = set()
        self.accepted = 0
        self.rejected = 0
        self.connect_failures = 0
        self.no_backend = 0
        self.idle_timeouts = 0
        # Bytes from clients and to clients, tcp mode (added when a connection ends; http
        # listeners count them per request in HttpContext).
        self.bytes_in = 0
        self.bytes_out = 0
        self._drained: asyncio.Future[None] | None = None
        # Told when a draining backend's last connection here closes (prompt drain reports).
        self.on_backend_idle: Callable[[Backend], None] | None = None
        # Shared state of an http listener's connections (routing, upstream pool, sweep).
        self.http: HttpContext | None = None

    async def start(self) -> None:
        from lb.proxy.http import HttpClientProtocol, HttpContext
        from lb.proxy.tcp import TcpClientProtocol

        sock = bind_socket(self.config.bind, self.config.backlog)
        factory: Callable[[], asyncio.Protocol]
        if self.config.mode == "http":
            self.http = HttpContext(self)
            # (Not an asyncio.Protocol subclass, so that it can be compiled; see lb/proxy/http.pxd.)
            factory = cast(Callable[[], asyncio.Protocol], lambda: HttpClientProtocol(self))
        else:
            factory = lambda: TcpClientProtocol(self)  # noqa: E731
        try:
            self.server = await self.loop.create_server(factory, sock=sock)
        except BaseException:
            sock.close()
            raise

    def admit(self, conn: Connection) -> bool:
        if len(self.connections) >= self.config.max_connections:
            self.rejected += 1
            return False
        self.accepted += 1
        self.connections.add(conn)
        return True

    def release(self, conn: Connection) -> None:
        self.connections.discard(conn)
        if not self.connections and self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    def backend_idle(self, backend: Backend) -> None:
        if self.on_backend_idle is not None:
            self.on_backend_idle(backend)

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
            from lb.proxy.http import HttpClientProtocol

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
        if self.http is not None:
            self.http.close()

    @property
    def active(self) -> int:
        return len(self.connections)

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
from typing import Protocol

from lb.config import ListenerConfig
from lb.model import Backend, parse_address
from lb.proxy.pool import PoolRuntime

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
        pool: PoolRuntime,
        loop: asyncio.AbstractEventLoop,
        report: FailureReporter,
    ) -> None:
        self.config = config
        self.pool = pool
        self.loop = loop
        self._report = report
        self.server: asyncio.Server | None = None
        self.connections: set[Connection] = set()
        self.accepted = 0
        self.rejected = 0
        self.connect_failures = 0
        self.no_backend = 0
        self.idle_timeouts = 0
        self._drained: asyncio.Future[None] | None = None

    async def start(self) -> None:
        from lb.proxy.tcp import TcpClientProtocol

        sock = bind_socket(self.config.bind, self.config.backlog)
        self.server = await self.loop.create_server(lambda: TcpClientProtocol(self), sock=sock)

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

    def report_failure(self, backend: Backend, kind: str, exc: BaseException | None) -> None:
        self._report(self.pool.name, backend, kind, exc)

    def stop_accepting(self) -> None:
        if self.server is not None:
            self.server.close()

    async def wait_idle(self) -> None:
        if not self.connections:
            return
        self._drained = self.loop.create_future()
        await self._drained

    def abort_all(self) -> None:
        for conn in list(self.connections):
            conn.abort()

    @property
    def active(self) -> int:
        return len(self.connections)

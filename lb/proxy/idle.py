"""Idle keep-alive connections to backends, per worker.

The pool hands out the most recently used idle connection of a backend (LIFO: the freshest is
the least likely to have been closed by the backend's own keep-alive timeout) and takes back
connections whose last response allows reuse. It caps idle connections per backend, closes
those idle longer than ``upstream_idle_timeout`` (a sweep, not a timer per connection), and
closes them all at once when a backend starts draining or is removed.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from lb.model import Backend

if TYPE_CHECKING:
    from lb.proxy.exchange import HttpUpstreamProtocol


class IdleConnection:
    """What the pool needs of a pooled connection (``HttpUpstreamProtocol`` derives from
    it): where this module is compiled, the pool reads these fields and calls these methods
    in C."""

    __slots__ = ("backend", "closed", "idle_deadline")

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.closed = False
        self.idle_deadline = 0.0  # loop.time() after which the sweep closes it, while idle

    def reusable(self) -> bool:
        """Open and between responses: it may take the next request."""
        return not self.closed

    def close(self) -> None:
        raise NotImplementedError


class IdleUpstreams:
    __slots__ = ("idle", "loop", "reused")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.idle: dict[Backend, list[HttpUpstreamProtocol]] = {}
        self.reused = 0

    def acquire(self, backend: Backend) -> HttpUpstreamProtocol | None:
        conns = self.idle.get(backend)
        while conns:
            conn = conns.pop()
            if conn.reusable():
                self.reused += 1
                return conn
        return None

    def release(
        self, conn: HttpUpstreamProtocol, max_idle: int, idle_timeout: float, now: float
    ) -> None:
        """Take back a connection whose response allows reuse, or close it (``now`` is
        ``loop.time()``)."""
        backend = conn.backend
        conns = self.idle.get(backend)
        if conns is None:
            conns = self.idle[backend] = []
        if len(conns) >= max_idle or not backend.eligible:
            conn.close()
            return
        conn.idle_deadline = now + idle_timeout
        conns.append(conn)

    def discard(self, conn: HttpUpstreamProtocol) -> None:
        conns = self.idle.get(conn.backend)
        if conns and conn in conns:
            conns.remove(conn)

    def close_backend(self, backend: Backend) -> int:
        """Close every idle connection of a backend (drain, removal). Returns how many."""
        conns = self.idle.pop(backend, [])
        for conn in conns:
            conn.close()
        return len(conns)

    def sweep(self, now: float) -> None:
        for backend, conns in list(self.idle.items()):
            keep = [c for c in conns if not c.closed and now < c.idle_deadline]
            for c in conns:
                if c not in keep:
                    c.close()
            if keep:
                self.idle[backend] = keep
            else:
                del self.idle[backend]

    def close_all(self) -> None:
        for backend in list(self.idle):
            self.close_backend(backend)

    @property
    def idle_count(self) -> int:
        return sum(len(c) for c in self.idle.values())

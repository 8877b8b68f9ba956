"""The L4 relay: a pair of asyncio protocols that move bytes between client and backend.

``TcpClientProtocol`` accepts the client, pauses reading, picks a backend and connects to it
(one task per connection, for the connect only), retrying other backends on failure. Once
connected, each side's ``data_received`` writes straight to the peer transport; there is no
coroutine per chunk. ``pause_writing`` on one side pauses reading on the other, so a slow
reader never makes the proxy buffer without bound. EOF is relayed as a half-close.

Idle detection reuses the byte counters (one addition per chunk): a timer per connection
fires every ``idle_timeout`` and closes the pair only if no byte moved since the last firing.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import TYPE_CHECKING, cast

from lb.model import AdminState, Backend

if TYPE_CHECKING:
    from lb.proxy.listener import Listener

log = logging.getLogger("lb.tcp")


class TcpUpstreamProtocol(asyncio.Protocol):
    """Backend side of a relay. Everything it reads goes to the client."""

    __slots__ = ("bytes_out", "client", "client_write", "transport")

    def __init__(self, client: TcpClientProtocol) -> None:
        self.client = client
        self.client_write = client.transport.write
        self.transport: asyncio.Transport | None = None
        self.bytes_out = 0  # backend -> client

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.client_write(data)
        self.bytes_out += len(data)

    def eof_received(self) -> bool:
        return self.client.upstream_eof()

    def pause_writing(self) -> None:
        self.client.transport.pause_reading()

    def resume_writing(self) -> None:
        self.client.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.client.upstream_lost()


class TcpClientProtocol(asyncio.Protocol):
    """Client side of a relay; owns the pair's lifetime and counters."""

    __slots__ = (
        "backend",
        "bytes_in",
        "client_eof",
        "closed",
        "connect_task",
        "early",
        "idle_handle",
        "last_activity",
        "listener",
        "server_eof",
        "transport",
        "upstream",
        "upstream_proto",
        "upstream_write",
    )

    def __init__(self, listener: Listener) -> None:
        self.listener = listener
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.upstream: asyncio.Transport | None = None
        self.early: list[bytes] = []
        self.upstream_write = self._hold
        self.backend: Backend | None = None
        self.connect_task: asyncio.Task[None] | None = None
        self.idle_handle: asyncio.TimerHandle | None = None
        self.upstream_proto: TcpUpstreamProtocol | None = None
        self.last_activity = -1
        self.bytes_in = 0  # client -> backend
        self.client_eof = False
        self.server_eof = False
        self.closed = False

    # -- client transport events ------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = t = cast(asyncio.Transport, transport)
        listener = self.listener
        if not listener.admit(self):
            t.close()
            return
        # uvloop starts reading after connection_made returns, whatever we ask here, so the
        # first bytes may arrive before the backend is connected: _hold keeps them.
        t.pause_reading()
        self.connect_task = listener.loop.create_task(self._connect())

    def _hold(self, data: bytes) -> None:
        """Writer used until the upstream is connected: keep the bytes, stop reading more."""
        self.early.append(data)
        self.transport.pause_reading()

    def data_received(self, data: bytes) -> None:
        self.upstream_write(data)
        self.bytes_in += len(data)

    def eof_received(self) -> bool:
        self.client_eof = True
        up = self.upstream
        if up is None:
            # Still connecting: keep our write side open; the EOF is relayed after connect.
            return self.connect_task is not None and not self.connect_task.done()
        if not up.is_closing():
            if self.server_eof:
                up.close()
                return False
            up.write_eof()
            return True
        return False

    def pause_writing(self) -> None:
        if self.upstream is not None:
            self.upstream.pause_reading()

    def resume_writing(self) -> None:
        if self.upstream is not None:
            self.upstream.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.connect_task is not None and not self.connect_task.done():
            self.connect_task.cancel()
        if self.upstream is not None:
            self.upstream.close()
        self._finish()

    # -- upstream events (called by TcpUpstreamProtocol) ------------------------------------

    def upstream_eof(self) -> bool:
        self.server_eof = True
        t = self.transport
        if t.is_closing():
            return False
        if self.client_eof:
            t.close()
            return False
        t.write_eof()
        return True

    def upstream_lost(self) -> None:
        self.upstream = None
        self.upstream_write = _drop
        # transport.close() flushes what is buffered before closing.
        self.transport.close()

    # -- connect with retries ---------------------------------------------------------------

    async def _connect(self) -> None:
        listener = self.listener
        pool = listener.pool
        loop = listener.loop
        key = None
        if pool.config.strategy == "consistent_hash":
            peer = self.transport.get_extra_info("peername")
            key = str(peer[0]).encode() if peer else None
        tried: list[Backend] = []
        timeout = listener.config.connect_timeout
        for _attempt in range(pool.config.retries + 1):
            backend = pool.pick_retry(key, tried)
            if backend is None:
                break
            if tried:
                tried[-1].retries += 1  # it failed there; this is the retry
            tried.append(backend)
            backend.active += 1
            try:
                async with asyncio.timeout(timeout):
                    transport, proto = await loop.create_connection(
                        lambda: TcpUpstreamProtocol(self), backend.host, backend.port
                    )
            except (OSError, TimeoutError) as exc:
                backend.active -= 1
                backend.connect_failures += 1
                listener.connect_failures += 1
                listener.report_failure(pool, backend, "connect", exc)
                continue
            if self.closed or self.transport.is_closing():
                # The client left while we were connecting.
                backend.active -= 1
                transport.close()
                return
            self.backend = backend
            self.upstream_proto = proto
            backend.total += 1
            if backend.failure_streak:
                pool.note_success(backend)  # passive health: it recovered
            sock = transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.upstream = transport
            self.upstream_write = transport.write
            if self.early:
                transport.writelines(self.early)
                self.early.clear()
            if self.client_eof:
                transport.write_eof()
            else:
                self.transport.resume_reading()
            self._arm_idle()
            return
        # Nothing could be reached: close the client.
        listener.no_backend += 1
        self.transport.close()

    # -- idle timeout -----------------------------------------------------------------------

    def _arm_idle(self) -> None:
        self.idle_handle = self.listener.loop.call_later(
            self.listener.config.idle_timeout, self._idle_check
        )

    def _idle_check(self) -> None:
        if self.closed:
            return
        activity = self.bytes_in + self.bytes_out
        if activity == self.last_activity:
            self.listener.idle_timeouts += 1
            self.transport.close()
            if self.upstream is not None:
                self.upstream.close()
            return
        self.last_activity = activity
        self._arm_idle()

    # -- teardown ---------------------------------------------------------------------------

    def abort(self) -> None:
        """Close both sides now (force removal, grace expiry)."""
        self.transport.abort()
        if self.upstream is not None:
            self.upstream.abort()

    @property
    def bytes_out(self) -> int:
        up = self.upstream_proto
        return up.bytes_out if up is not None else 0

    def _finish(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.idle_handle is not None:
            self.idle_handle.cancel()
        b = self.backend
        if b is not None:
            b.active -= 1
            b.bytes_in += self.bytes_in
            b.bytes_out += self.bytes_out
            if not b.active and b.admin is not AdminState.READY:
                self.listener.backend_idle(b)  # a drain finished here: report it at once
        listener = self.listener
        listener.bytes_in += self.bytes_in  # per connection, at its end
        listener.bytes_out += self.bytes_out
        listener.release(self)


def _drop(data: bytes) -> None:
    """Writer after the upstream is gone: the client is being closed, its bytes have nowhere
    to go."""

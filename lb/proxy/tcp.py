"""The L4 relay: a pair of asyncio protocols that move bytes between client and backend.

``TcpClientProtocol`` accepts the client, pauses reading, picks a backend and connects to it
(one task per connection, for the connect only), retrying other backends on failure. Once
connected, each side's ``data_received`` writes straight to the peer transport; there is no
coroutine per chunk. ``pause_writing`` on one side pauses reading on the other, so a slow
reader never makes the proxy buffer without bound. EOF is relayed as a half-close.

Idle detection reuses the byte counters (one addition per chunk): the listener's sweep
(about once a second, see ``Listener``) notes when a relay's counters last moved, and closes a
relay whose counters have not moved for ``idle_timeout``, read at each sweep, so a reload
reaches relays that are already open. No timer per connection.

The backend is taken with ``PoolRuntime.acquire`` when the connect starts and given back with
``PoolRuntime.release`` (a failed connect, or the end of the relay). Settings are read from the
listener's current config when they are needed (connect and idle timeouts, the access log), so
a reload reaches relays that are already open. With an access log, each relay writes one line
when it ends.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from typing import Protocol, cast

import orjson

from lb.config import ListenerConfig
from lb.model import Backend
from lb.proxy.accesslog import AccessLog
from lb.proxy.edge import UpstreamTls, open_upstream, proxy_header_for
from lb.proxy.peer import peer_closed
from lb.proxy.pool import PoolRuntime
from lb.proxyproto import Address


class Listener(Protocol):
    """What a relay uses of its listener (``lb.proxy.listener.Listener``)."""

    config: ListenerConfig
    loop: asyncio.AbstractEventLoop
    access: AccessLog
    connect_failures: int
    no_backend: int
    idle_timeouts: int
    bytes_in: int
    bytes_out: int
    upstream_tls: dict[str, UpstreamTls]

    @property
    def pool(self) -> PoolRuntime: ...

    def admit(self, conn: TcpClientProtocol) -> bool: ...

    def release(self, conn: TcpClientProtocol) -> None: ...

    def report_failure(
        self, pool: PoolRuntime, backend: Backend, kind: str, exc: BaseException | None
    ) -> None: ...


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
        "client_ip",
        "closed",
        "connect_task",
        "early",
        "idle_since",
        "key",
        "last_activity",
        "listener",
        "pool",
        "proxied",
        "server_eof",
        "started",
        "transport",
        "upstream",
        "upstream_proto",
        "upstream_write",
        "waiting",
    )

    def __init__(self, listener: Listener) -> None:
        self.listener = listener
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.upstream: asyncio.Transport | None = None
        self.early: list[bytes] = []
        self.upstream_write = self._hold
        self.backend: Backend | None = None
        self.pool: PoolRuntime | None = None
        self.client_ip = ""
        self.started = 0.0
        self.connect_task: asyncio.Task[None] | None = None
        self.key: bytes | None = None  # the hash key (source_ip) when the strategy uses one
        # While queued for a backend slot (PoolRuntime.enqueue): resolved by ``granted``.
        self.waiting: asyncio.Future[Backend] | None = None
        self.idle_since = 0.0
        self.upstream_proto: TcpUpstreamProtocol | None = None
        self.last_activity = -1
        self.bytes_in = 0  # client -> backend
        self.client_eof = False
        self.server_eof = False
        self.closed = False
        # (source, destination) from a PROXY header (lb/proxy/edge.py), or None
        self.proxied: tuple[Address, Address | None] | None = None

    def proxied_by(self, source: Address, destination: Address | None) -> None:
        """A PROXY header named the client (before ``connection_made``)."""
        self.client_ip = source[0]
        self.proxied = (source, destination)

    def proxy_header(self, version: str) -> bytes:
        """The PROXY header a ``send_proxy`` pool's backend gets for this client."""
        return proxy_header_for(version, self.proxied, self.transport)

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
        if self.proxied is None:  # (else a PROXY header named the client)
            peer = t.get_extra_info("peername")
            self.client_ip = str(peer[0]) if peer else "unknown"
        self.started = listener.loop.time()
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
            if self.waiting is not None:
                # It left while waiting in the queue: leave the queue now, and close.
                assert self.connect_task is not None
                self.connect_task.cancel()
                return False
            # Still connecting: keep our write side open; the EOF is relayed after connect.
            return self.connect_task is not None and not self.connect_task.done()
        if not up.is_closing():
            if self.server_eof or not up.can_write_eof():  # (TLS cannot half-close)
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
        if self.client_eof or not t.can_write_eof():  # (TLS cannot half-close)
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
        pool = self.pool = listener.pool
        loop = listener.loop
        key = self.key = self.client_ip.encode() if pool.needs_key else None
        tried: list[Backend] = []
        send_proxy = pool.config.send_proxy  # the header goes before any client byte
        preamble = None if send_proxy is None else self.proxy_header(send_proxy)
        for _attempt in range(pool.config.retries + 1):
            if tried and not pool.retry_allowed():
                break
            backend = pool.pick_retry(key, tried)
            if backend is None:
                if tried and not (pool.eligible and pool.limited):
                    break
                # Every eligible backend is at its limit (or none is eligible and the pool
                # holds): wait for a slot, reading nothing from the client meanwhile.
                backend = await self._wait(pool)
                if backend is None:
                    break
            else:
                pool.acquire(backend)
            if tried:
                tried[-1].retries += 1  # it failed there; this is the retry
            tried.append(backend)
            connect_started = loop.time() if pool.tracks_latency else 0.0
            try:
                async with asyncio.timeout(listener.config.connect_timeout):
                    transport, proto = await open_upstream(
                        loop,
                        lambda: TcpUpstreamProtocol(self),
                        backend,
                        listener.upstream_tls.get(pool.name),
                        preamble,
                    )
            except (OSError, TimeoutError) as exc:
                pool.release(backend)
                backend.connect_failures += 1
                listener.connect_failures += 1
                listener.report_failure(pool, backend, "connect", exc)
                continue
            if self.closed or self.transport.is_closing():
                # The client left while we were connecting.
                pool.release(backend)
                transport.close()
                return
            self.backend = backend
            self.upstream_proto = proto
            if pool.tracks_latency:  # tcp: the connect time is the latency peak_ewma sees
                now = loop.time()
                pool.strategy.on_latency(backend, now - connect_started, now)  # type: ignore[attr-defined]
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
                if transport.can_write_eof():
                    transport.write_eof()
                else:
                    transport.close()
            else:
                self.transport.resume_reading()
            self.idle_since = loop.time()
            return
        # Nothing could be reached: close the client.
        listener.no_backend += 1
        self.transport.close()

    async def _wait(self, pool: PoolRuntime) -> Backend | None:
        """Wait in the pool's queue: the backend acquired for this connection, or None when
        the queue is full or the wait timed out."""
        timeout = pool.enqueue(self)
        if not timeout:
            return None
        waiting: asyncio.Future[Backend] = self.listener.loop.create_future()
        self.waiting = waiting
        # Read while waiting, to see a client that leaves: the first bytes that come are
        # held and reading pauses again (_hold), so nothing more is read until a backend.
        if not self.early:
            self.transport.resume_reading()
        try:
            async with asyncio.timeout(timeout):
                return await waiting
        except TimeoutError:
            pool.expire(self)
            return None
        except asyncio.CancelledError:
            pool.leave(self)  # the client went away while waiting
            raise
        finally:
            self.waiting = None

    def granted(self, backend: Backend) -> None:
        """A slot came free (the pool acquired ``backend`` for this connection)."""
        waiting = self.waiting
        if waiting is not None and not waiting.done():
            waiting.set_result(backend)
        else:  # the wait ended at the same moment (timeout, client gone): give it back
            assert self.pool is not None
            self.pool.release(backend)

    def client_gone(self) -> bool:
        """While queued: the client closed, though reading was paused (it sent bytes, which
        wait in ``early``). Before that, reading goes on and the close is seen as it comes."""
        return bool(self.early) and peer_closed(self.transport)

    def drop(self) -> None:
        self.transport.abort()  # connection_lost cancels the wait: it leaves the queue

    # -- idle timeout -----------------------------------------------------------------------

    def check_idle(self, now: float, idle_timeout: float) -> None:
        """The listener's sweep: close a relay that moved no byte for ``idle_timeout``."""
        if self.upstream is None or self.closed:
            return  # still connecting (the connect timeout applies), or gone
        activity = self.bytes_in + self.bytes_out
        if activity != self.last_activity:
            self.last_activity = activity
            self.idle_since = now
        elif now - self.idle_since > idle_timeout:
            self.listener.idle_timeouts += 1
            self.transport.close()
            self.upstream.close()

    # -- teardown ---------------------------------------------------------------------------

    def uses(self, backend: Backend) -> bool:
        return self.backend is backend

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
        b = self.backend
        if b is not None:
            b.bytes_in += self.bytes_in
            b.bytes_out += self.bytes_out
            assert self.pool is not None
            self.pool.release(b)
        listener = self.listener
        listener.bytes_in += self.bytes_in  # per connection, at its end
        listener.bytes_out += self.bytes_out
        lines = listener.access.lines
        if lines is not None and self.pool is not None:
            lines.append(self._access_line())
        listener.release(self)

    def _access_line(self) -> bytes:
        b = self.backend
        return (
            orjson.dumps(
                {
                    "time": round(time.time(), 3),
                    "client": self.client_ip,
                    "backend": b.address if b is not None else None,
                    "bytes_in": self.bytes_in,
                    "bytes_out": self.bytes_out,
                    "duration": round(self.listener.loop.time() - self.started, 6),
                }
            )
            + b"\n"
        )


def _drop(data: bytes) -> None:
    """Writer after the upstream is gone: the client is being closed, its bytes have nowhere
    to go."""

"""The L7 proxy: asyncio protocol adapters around the sans-IO HTTP layer in ``lb/http/``.

``HttpClientProtocol`` owns one client connection. Its ``RequestParser`` turns bytes into
request heads and raw body chunks; for each request the protocol routes to a pool, picks a
backend with the pool's strategy, takes an idle keep-alive connection from the
``UpstreamPool`` (or connects a new one), and writes the rewritten head and the body to it.
``HttpUpstreamProtocol`` owns one backend connection and its ``ResponseParser``; it hands the
response events to the client protocol that is attached to it, which forwards raw bytes.
When a response ends, the upstream connection goes back to the pool if it is reusable, and the
request parser resumes (a pipelined request that was waiting is parsed then).

Flow control is symmetric: a full client write buffer pauses reading the backend, a full
backend write buffer pauses reading the client. After a ``101`` both transports are switched to
a plain byte tunnel (``Tunnel``) with its own idle timeout.

Timeouts are checked by one sweep per listener (``HttpContext.sweep``) over its connections,
not by a timer per request: keep-alive idle, request head (slowloris, 408), and the backend's
first response byte (504). A request that never reached a backend (connect refused or timed
out, or a pooled connection closed before any response byte on an idempotent request) is
retried on another backend, up to the pool's ``retries``.

No logging on the per-request path: the access log is buffered and written once a second.

Where a C compiler is there, setup.py compiles this module with Cython, with the class layouts
and method kinds in ``http.pxd`` next to it (see docs/architecture.md, "The compiled fast
path"): every attribute a class sets must be declared there too, and the protocol classes do
not subclass ``asyncio.Protocol`` (a compiled class cannot; uvloop needs only the methods).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from bisect import bisect_left
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING, cast

import orjson

from lb.http import (
    RequestHead,
    RequestLimits,
    RequestParser,
    ResponseHead,
    ResponseParser,
    error_response,
)
from lb.http.rewrite import client_response_head, upstream_request_head
from lb.model import AdminState, Backend
from lb.proxy.pool import PoolRuntime
from lb.proxy.upstream_pool import UpstreamPool
from lb.routing import Router
from lb.stats import LATENCY_BOUNDS

if TYPE_CHECKING:
    from lb.proxy.listener import Listener

log = logging.getLogger("lb.http")

IDEMPOTENT = frozenset({b"GET", b"HEAD", b"PUT", b"DELETE", b"OPTIONS", b"TRACE"})
# Bytes of pipelined requests held while a response is in flight before reading pauses.
MAX_STASH = 256 * 1024
RETRY_AFTER = 1

# Client connection states.
_IDLE = 0  # between requests, nothing received
_HEAD = 1  # part of a request head received
_ACTIVE = 2  # a request is being proxied
_TUNNEL = 3  # upgraded; the Tunnel owns both transports now
_CLOSED = 4


class HttpContext:
    """Per-listener shared objects for HTTP connections: routing, limits, the upstream pool,
    the access log, and the timeout sweep."""

    def __init__(self, listener: Listener) -> None:
        cfg = listener.config
        self.listener = listener
        self.loop = listener.loop
        self.router = Router(cfg.routes, cfg.pool)
        self.limits = RequestLimits(
            max_request_line=cfg.max_request_line,
            max_header_bytes=cfg.max_header_bytes,
            max_headers=cfg.max_headers,
            max_body_bytes=cfg.max_body_bytes,
        )
        self.upstreams = UpstreamPool(self.loop)
        self.via = f"1.1 {cfg.via}".encode() if cfg.via else None
        self.keepalive_timeout = cfg.keepalive_timeout
        self.header_timeout = cfg.header_timeout
        self.response_timeout = cfg.response_timeout
        self.stopping = False
        # Counters (plain ints): requests, responses by class, retries, own error answers.
        self.requests = 0
        self.responses = [0, 0, 0, 0, 0, 0]
        self.retries = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.access: list[bytes] | None = None
        self._access_file: IO[bytes] | None = None
        if cfg.access_log:
            path = Path(cfg.access_log)
            path.parent.mkdir(parents=True, exist_ok=True)
            self._access_file = path.open("ab")  # closed in close()
            self.access = []
        interval = min(1.0, max(0.05, min(self.header_timeout, self.response_timeout) / 4))
        self._sweep_interval = interval
        self._sweep_handle = self.loop.call_later(interval, self.sweep)

    def sweep(self) -> None:
        now = self.loop.time()
        for conn in list(self.listener.connections):
            if isinstance(conn, HttpClientProtocol):
                conn.check_timeouts(now)
        self.upstreams.sweep(now)
        if self.access:
            self.flush_access_log()
        self._sweep_handle = self.loop.call_later(self._sweep_interval, self.sweep)

    def flush_access_log(self) -> None:
        if self._access_file is not None and self.access:
            self._access_file.write(b"".join(self.access))
            self._access_file.flush()
            self.access.clear()

    def close(self) -> None:
        self._sweep_handle.cancel()
        self.upstreams.close_all()
        self.flush_access_log()
        if self._access_file is not None:
            self._access_file.close()
            self._access_file = None


class HttpUpstreamProtocol:
    """One keep-alive connection to a backend. Events go to the attached client, if any."""

    __slots__ = (
        "backend",
        "client",
        "closed",
        "idle_deadline",
        "parser",
        "requests",
        "transport",
        "upstreams",
    )

    def __init__(self, backend: Backend, upstreams: UpstreamPool) -> None:
        self.backend = backend
        self.upstreams = upstreams
        self.client: HttpClientProtocol | None = None
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.parser = ResponseParser(self)
        self.closed = False
        self.requests = 0
        self.idle_deadline = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.parser.feed(data)

    def eof_received(self) -> bool:
        if self.client is None:
            # The backend closed an idle pooled connection. The transport closes after this
            # returns, but connection_lost comes later: a request handled in the same loop
            # iteration must not be given this connection (its parser is closed already).
            self.closed = True
            self.upstreams.discard(self)
        self.parser.feed_eof()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.client is None:
            self.upstreams.discard(self)
        elif not self.parser.closed:
            self.parser.feed_eof()

    def pause_writing(self) -> None:
        if self.client is not None:
            self.client.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.client is not None:
            self.client.transport.resume_reading()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.parser.close()
            self.transport.close()

    # -- ResponseHandler: forward to the client ---------------------------------------------

    def on_response_interim(self, head: ResponseHead) -> None:
        if self.client is not None:
            self.client.response_interim(head)

    def on_response_head(self, head: ResponseHead) -> None:
        if self.client is not None:
            self.client.response_head(head)

    def on_response_body(self, data: bytes) -> None:
        client = self.client
        if client is not None:
            head = client.out_head
            if head is None:
                client.transport.write(data)
            else:  # head and first body bytes in one writev: one syscall, one packet
                client.out_head = None
                client.transport.writelines((head, data))

    def on_response_end(self, reusable: bool) -> None:
        if self.client is not None:
            self.client.response_end(reusable)
        elif not reusable:
            self.close()

    def on_response_whole(self, head: ResponseHead, body: bytes, reusable: bool) -> None:
        if self.client is not None:
            self.client.response_whole(head, body, reusable)
        elif not reusable:
            self.close()

    def on_response_upgrade(self, data: bytes) -> None:
        if self.client is not None:
            self.client.response_upgrade(data)

    def on_response_error(self, reason: str) -> None:
        client = self.client
        self.close()
        if client is not None:
            client.response_error(reason)
        else:
            self.upstreams.discard(self)


class HttpClientProtocol:
    """One client connection; see the module docstring."""

    __slots__ = (
        "backend",
        "client_eof",
        "client_ip",
        "connect_task",
        "ctx",
        "head",
        "keep_alive",
        "key",
        "listener",
        "loop",
        "out_head",
        "parser",
        "pending",
        "pool",
        "request_complete",
        "request_id",
        "response_started",
        "retries",
        "set_cookie",
        "state",
        "status",
        "t_mark",
        "t_start",
        "transport",
        "tried",
        "upstream",
        "upstream_head",
        "write_paused",
    )

    def __init__(self, listener: Listener) -> None:
        self.listener = listener
        ctx = listener.http
        assert ctx is not None
        self.ctx = ctx
        self.loop = listener.loop
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.parser = RequestParser(self, ctx.limits)
        self.state = _IDLE
        self.t_mark = self.loop.time()
        self.t_start = 0.0
        self.client_ip = b""
        self.client_eof = False
        self.upstream: HttpUpstreamProtocol | None = None
        self.connect_task: asyncio.Task[None] | None = None
        self.head: RequestHead | None = None
        self.pool: PoolRuntime | None = None
        self.backend: Backend | None = None
        self.key: bytes | None = None
        self.pending: list[bytes] | None = None
        self.upstream_head = b""
        self.request_id = b""
        self.set_cookie = b""
        self.request_complete = False
        self.response_started = False
        self.keep_alive = True
        self.tried: list[Backend] = []
        self.retries = 0
        self.status = 0
        self.write_paused = False
        # A response head not yet written: it goes out with the first body bytes.
        self.out_head: bytes | None = None

    # -- client transport -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = t = cast(asyncio.Transport, transport)
        if not self.listener.admit(self):
            self.state = _CLOSED
            t.close()
            return
        peer = t.get_extra_info("peername")
        self.client_ip = str(peer[0]).encode() if peer else b"unknown"

    def data_received(self, data: bytes) -> None:
        state = self.state
        if state == _IDLE:
            self.state = _HEAD
            self.t_mark = self.loop.time()
        elif state == _ACTIVE and self.parser.paused:
            # Pipelined requests arriving while a response is in flight are stashed by the
            # parser; stop reading a client that gets far ahead of us.
            self.parser.feed(data)
            if self.parser.pending_bytes > MAX_STASH:
                self.transport.pause_reading()
            return
        self.parser.feed(data)

    def eof_received(self) -> bool:
        self.client_eof = True
        self.parser.feed_eof()
        # Keep our side open while a response is on its way; close otherwise.
        return self.state == _ACTIVE

    def pause_writing(self) -> None:
        self.write_paused = True
        if self.upstream is not None:
            self.upstream.transport.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.upstream is not None:
            self.upstream.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.state == _TUNNEL:
            return  # the Tunnel owns the transports and the release
        self.state = _CLOSED
        self.parser.close()
        if self.connect_task is not None and not self.connect_task.done():
            self.connect_task.cancel()
        up = self.upstream
        if up is not None:
            # A response was in flight: that connection cannot be reused.
            self.upstream = None
            up.client = None
            up.close()
        self._release_backend()
        self.listener.release(self)

    def abort(self) -> None:
        if self.upstream is not None:
            self.upstream.close()
        self.transport.abort()

    def close_when_idle(self) -> None:
        """Graceful stop: close now if idle, else after the response in flight."""
        if self.state in (_IDLE, _HEAD):
            self.transport.close()
        else:
            self.keep_alive = False

    # -- RequestHandler ---------------------------------------------------------------------

    def on_request_head(self, head: RequestHead) -> None:
        self.state = _ACTIVE
        self.head = head
        # t_mark is when the head started to arrive (or the previous response ended, for a
        # pipelined request): close enough, and it saves a clock read per request.
        self.t_start = self.t_mark
        self.request_complete = False
        self.response_started = False
        self.status = 0
        self.retries = 0
        self.tried.clear()
        self.set_cookie = b""
        self.keep_alive = head.keep_alive and not self.ctx.stopping
        ctx = self.ctx
        ctx.requests += 1
        router = ctx.router
        pool_name = router.match(head.host, head.path) if router.routes else router.default
        pool = self.listener.pools.get(pool_name) if pool_name is not None else None
        if pool is None:
            self.respond_error(404, "no route matches this request")
            return
        self.pool = pool
        self.key = self._hash_key(pool, head) if pool.needs_key else None
        self.upstream_head, self.request_id = upstream_request_head(
            head, self.client_ip, b"http", None, ctx.via
        )
        self._dispatch()

    def on_request_body(self, data: bytes) -> None:
        if self.pending is not None:
            self.pending.append(data)
            self.transport.pause_reading()
        elif self.upstream is not None:
            self.upstream.transport.write(data)
        # else: the response already ended (the backend answered early): drop the rest.

    def on_request_end(self) -> None:
        self.request_complete = True
        if self.state == _ACTIVE and self.upstream is None and self.pending is None:
            # The response finished before the request did (an early answer): the connection
            # cannot be trusted for another request.
            self._finish_exchange(self.loop.time())

    def on_request_error(self, status: int, reason: str) -> None:
        if self.response_started:
            self.abort()
            return
        if self.upstream is not None:
            self.upstream.client = None
            self.upstream.close()
            self.upstream = None
            self._release_backend()
        self.respond_error(status, reason)

    # -- choosing a backend -----------------------------------------------------------------

    def _hash_key(self, pool: PoolRuntime, head: RequestHead) -> bytes | None:
        kind = pool.key_kind
        if kind == "source_ip":
            return self.client_ip
        if kind == "path":
            return head.path
        if kind == "header":
            return head.get(pool.key_name)
        return head.cookie(pool.key_name)

    def _pick(self, pool: PoolRuntime) -> Backend | None:
        cookie_name = pool.sticky_cookie
        if cookie_name is not None and not self.tried:
            assert self.head is not None
            token = self.head.cookie(cookie_name)
            if token is not None:
                b = pool.by_token.get(token)
                if b is not None and b.eligible:
                    return b
        b = pool.pick(self.key, self.tried)
        if b is not None and cookie_name is not None:
            self.set_cookie = pool.sticky_header(b)
        return b

    def _dispatch(self) -> None:
        pool = self.pool
        assert pool is not None
        if pool.sticky_cookie is not None:
            backend = self._pick(pool)
        elif self.tried:
            backend = pool.pick_retry(self.key, self.tried)
        else:
            # The first try (not a retry): ask the strategy straight away; PoolRuntime.pick
            # handles the rest (panic mode when nothing is eligible).
            backend = pool.strategy.pick(self.key) or pool.pick(self.key)
        if backend is None:
            if self.tried:
                self.respond_error(502, "no backend could be reached")
            else:
                self.respond_error(503, "no backend is available", RETRY_AFTER)
            return
        self.tried.append(backend)
        self.backend = backend
        backend.active += 1
        backend.total += 1
        conn = self.ctx.upstreams.acquire(backend)
        if conn is not None:
            self._attach(conn)
            pending = self.pending
            if pending is None:
                conn.transport.write(self.upstream_head)
            else:  # a retry after a failed connect: the head and any body read so far
                self.pending = None
                conn.transport.writelines(pending)
                if not self.request_complete:
                    self.transport.resume_reading()
        else:
            if self.pending is None:
                self.pending = [self.upstream_head]
            self.transport.pause_reading()
            self.connect_task = self.loop.create_task(self._connect(backend))

    async def _connect(self, backend: Backend) -> None:
        pool = self.pool
        assert pool is not None
        conn = HttpUpstreamProtocol(backend, self.ctx.upstreams)
        # (Not an asyncio.Protocol subclass, so that it can be compiled; it has the methods.)
        factory = cast(Callable[[], asyncio.Protocol], lambda: conn)
        try:
            async with asyncio.timeout(self.listener.config.connect_timeout):
                transport, _ = await self.loop.create_connection(
                    factory, backend.host, backend.port
                )
        except (OSError, TimeoutError) as exc:
            backend.connect_failures += 1
            self.listener.connect_failures += 1
            self.listener.report_failure(pool, backend, "connect", exc)
            self._retry_or_fail(502 if isinstance(exc, OSError) else 504, "connect")
            return
        if self.state == _CLOSED:
            transport.close()
            return
        pending = self.pending or []
        self.pending = None
        self.t_mark = self.loop.time()  # the response timeout counts from now
        self._attach(conn)
        transport.writelines(pending)
        if not self.request_complete:
            self.transport.resume_reading()

    def _attach(self, conn: HttpUpstreamProtocol) -> None:
        head = self.head
        assert head is not None
        self.upstream = conn
        conn.client = self
        conn.requests += 1
        if self.write_paused:
            conn.transport.pause_reading()
        # (positional: this runs per request; head_request, upgrade, dechunk)
        conn.parser.start(head.method == b"HEAD", head.upgrade is not None, head.version == b"1.0")

    def _retry_or_fail(self, status: int, why: str) -> None:
        """The request never reached the backend (or provably was not processed)."""
        self._release_backend()
        pool = self.pool
        assert pool is not None and self.head is not None
        if self.state == _CLOSED:
            return
        if self.retries < pool.config.retries:
            self.retries += 1
            self.ctx.retries += 1
            self.tried[-1].retries += 1  # the backend it failed on (retry path only)
            self._dispatch()
            return
        self.pending = None
        self.respond_error(status, f"backend {why} failed")

    def _release_backend(self) -> None:
        b = self.backend
        if b is not None:
            b.active -= 1
            self.backend = None
            if not b.active and b.admin is not AdminState.READY:
                self.listener.backend_idle(b)  # a drain finished here: report it at once

    # -- response events (from HttpUpstreamProtocol) ----------------------------------------

    def response_interim(self, head: ResponseHead) -> None:
        assert self.head is not None
        if self.head.version == b"1.1":
            self.transport.write(head.raw)
            self.response_started = True

    def _client_head(self, head: ResponseHead) -> bytes:
        """The response head as the client gets it (also notes the status)."""
        req = self.head
        assert req is not None
        self.status = head.status
        self.response_started = True
        if head.close_delimited:
            self.keep_alive = False
        extra = b"X-Request-ID: " + self.request_id + b"\r\n" + self.set_cookie
        return client_response_head(head, not self.keep_alive, extra, req.version == b"1.0")

    def response_head(self, head: ResponseHead) -> None:
        out = self._client_head(head)
        if head.no_body:
            self.transport.write(out)
        else:
            self.out_head = out  # it goes out with the first body bytes

    def response_whole(self, head: ResponseHead, body: bytes, reusable: bool) -> None:
        """A whole response from one buffer: one write, then the end of the exchange."""
        out = self._client_head(head)
        if body:
            self.transport.writelines((out, body))
        else:
            self.transport.write(out)
        self.response_end(reusable)

    def flush_head(self) -> None:
        head = self.out_head
        if head is not None:
            self.out_head = None
            self.transport.write(head)

    def response_end(self, reusable: bool) -> None:
        if self.out_head is not None:
            self.flush_head()  # an empty body
        conn = self.upstream
        assert conn is not None
        pool = self.pool
        assert pool is not None
        self.upstream = None
        conn.client = None
        self.ctx.bytes_out += conn.parser.bytes_received
        now = self.loop.time()
        b = self.backend
        if b is not None:
            b.responses[self.status // 100] += 1
            elapsed = now - self.t_mark
            b.latency[bisect_left(LATENCY_BOUNDS, elapsed)] += 1
            b.latency_sum += elapsed
            if b.failure_streak and self.status < 500:
                pool.note_success(b)
            elif self.status >= 500 and pool.report_5xx:
                self.listener.report_failure(pool, b, "5xx", None)
            b.active -= 1  # (_release_backend, inline on this path)
            self.backend = None
            if not b.active and b.admin is not AdminState.READY:
                self.listener.backend_idle(b)
        config = pool.config
        if reusable and self.request_complete and conn.requests < config.upstream_max_requests:
            if self.write_paused:
                conn.transport.resume_reading()  # paused for this client, not for the pool
            self.ctx.upstreams.release(
                conn, config.upstream_max_idle, config.upstream_idle_timeout, now
            )
        else:
            conn.close()
        self._account(now)
        if self.request_complete:
            self._finish_exchange(now)
        else:
            # The backend answered before reading the whole request: drop the rest of the body
            # as it arrives, then close (on_request_end); the connection is out of step.
            self.keep_alive = False

    def _finish_exchange(self, now: float) -> None:
        if not self.keep_alive or self.client_eof or self.ctx.stopping or self.state == _CLOSED:
            self.state = _CLOSED
            self.parser.close()
            self.transport.close()
            return
        self.state = _IDLE
        self.t_mark = now
        self.transport.resume_reading()
        self.parser.resume()  # may start the next (pipelined) request right here

    def response_upgrade(self, data: bytes) -> None:
        self.flush_head()
        conn = self.upstream
        assert conn is not None
        self.state = _TUNNEL
        self.upstream = None
        conn.client = None
        self._account(self.loop.time())
        self._release_backend()
        if data:
            self.transport.write(data)
        leftover = self.parser.detach()
        Tunnel(self.listener, self, self.transport, conn.transport, leftover)

    def response_error(self, reason: str) -> None:
        conn = self.upstream
        self.upstream = None
        pool = self.pool
        assert pool is not None and self.head is not None
        b = self.backend
        if self.response_started:
            self.flush_head()
            self._release_backend()
            self.abort()
            return
        untouched = conn is not None and conn.parser.bytes_received == 0
        if b is not None:
            self.listener.report_failure(pool, b, "reset", None)
        if (
            untouched
            and self.head.method in IDEMPOTENT
            and not self.head.has_body
            and self.request_complete
        ):
            # The keep-alive race: the backend closed a pooled connection as we reused it.
            self.pending = None
            self._retry_or_fail(502, "connection")
            return
        self._release_backend()
        self.respond_error(502, "the backend closed the connection or sent an invalid response")

    # -- own answers, timeouts, accounting --------------------------------------------------

    def respond_error(self, status: int, reason: str, retry_after: int | None = None) -> None:
        self.status = status
        head = self.head
        answer = error_response(
            status, reason, retry_after, body=head is None or head.method != b"HEAD"
        )
        self.ctx.bytes_out += len(answer)
        self.transport.write(answer)
        self._account(self.loop.time())
        self.state = _CLOSED
        self.parser.close()
        self.transport.close()

    def check_timeouts(self, now: float) -> None:
        state = self.state
        ctx = self.ctx
        if state == _IDLE:
            if now - self.t_mark > ctx.keepalive_timeout or ctx.stopping:
                self.state = _CLOSED
                self.transport.close()
        elif state == _HEAD:
            if now - self.t_mark > ctx.header_timeout:
                self.head = None
                self.respond_error(408, "the request head did not arrive in time")
        elif state == _ACTIVE:
            up = self.upstream
            if (
                up is not None
                and up.parser.bytes_received == 0
                and now - self.t_mark > ctx.response_timeout
            ):
                self.upstream = None
                up.client = None
                up.close()
                pool, b = self.pool, self.backend
                if pool is not None and b is not None:
                    self.listener.report_failure(pool, b, "timeout", None)
                self._release_backend()
                if self.response_started:
                    self.abort()
                else:
                    self.respond_error(504, "the backend did not answer in time")

    def _account(self, now: float) -> None:
        ctx = self.ctx
        ctx.responses[self.status // 100] += 1
        head = self.head
        if head is not None:
            ctx.bytes_in += len(head.raw) + head.body_bytes
        access = ctx.access
        if access is not None:
            access.append(
                orjson.dumps(
                    {
                        "time": round(time.time(), 3),
                        "client": self.client_ip.decode(),
                        "method": head.method.decode("latin-1") if head else "",
                        "path": head.target.decode("latin-1") if head else "",
                        "status": self.status,
                        "bytes_in": (len(head.raw) + head.body_bytes) if head else 0,
                        "backend": self.tried[-1].address if self.tried else None,
                        "upstream_time": round(now - self.t_mark, 6),
                        "total_time": round(now - self.t_start, 6),
                        "request_id": self.request_id.decode("latin-1"),
                        "retries": self.retries,
                    }
                )
                + b"\n"
            )


class Tunnel:
    """After ``101 Switching Protocols``: relay bytes both ways, with an idle timeout."""

    __slots__ = ("client", "client_proto", "closed", "handle", "last", "listener", "moved")

    def __init__(
        self,
        listener: Listener,
        client_proto: HttpClientProtocol,
        client: asyncio.Transport,
        upstream: asyncio.Transport,
        leftover: bytes,
    ) -> None:
        self.listener = listener
        self.client_proto = client_proto
        self.client = client
        self.closed = False
        self.moved = 0
        self.last = -1
        client.set_protocol(_TunnelSide(self, upstream))
        upstream.set_protocol(_TunnelSide(self, client))
        if leftover:
            upstream.write(leftover)
        client.resume_reading()
        upstream.resume_reading()
        self.handle = listener.loop.call_later(listener.config.idle_timeout, self._idle)

    def _idle(self) -> None:
        if self.closed:
            return
        if self.moved == self.last:
            self.close()
            return
        self.last = self.moved
        self.handle = self.listener.loop.call_later(self.listener.config.idle_timeout, self._idle)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.handle.cancel()
            self.client.close()
            self.listener.release(self.client_proto)


class _TunnelSide(asyncio.Protocol):
    __slots__ = ("peer", "tunnel", "write")

    def __init__(self, tunnel: Tunnel, peer: asyncio.Transport) -> None:
        self.tunnel = tunnel
        self.peer = peer
        self.write: Callable[[bytes], None] = peer.write

    def data_received(self, data: bytes) -> None:
        self.write(data)
        self.tunnel.moved += 1

    def eof_received(self) -> bool:
        if self.peer.can_write_eof() and not self.peer.is_closing():
            self.peer.write_eof()
            return True
        return False

    def pause_writing(self) -> None:
        with contextlib.suppress(RuntimeError):
            self.peer.pause_reading()

    def resume_writing(self) -> None:
        with contextlib.suppress(RuntimeError):
            self.peer.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.peer.close()
        self.tunnel.close()

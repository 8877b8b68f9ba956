"""One HTTP request/response exchange, from a parsed request head to the end of its response.

The client connection (``lb/proxy/http.py``) parses, pipelines, keeps alive and times out;
for each request head it creates an ``Exchange``, which:

1. routes the request to a pool (``ctx.router``) and computes the hash key when the pool's
   strategy uses one;
2. picks a backend (a sticky cookie first, then the strategy; a retry avoids what was tried)
   and takes it with ``PoolRuntime.acquire`` — every way out gives it back with
   ``PoolRuntime.release``, the one place where "a draining backend is now idle" is noticed;
3. attaches an idle keep-alive ``HttpUpstreamProtocol`` from the listener's ``IdleUpstreams``,
   or connects a new one (the head and any body read meanwhile wait in ``pending``);
4. relays the response events from the upstream protocol to the client transport (the head
   goes out with the first body bytes), with flow control both ways;
5. retries a request that never reached a backend (connect refused or timed out, or a pooled
   connection closed before any response byte on an idempotent bodiless request), up to the
   pool's ``retries``;
6. answers 404/502/503/504 itself when it must, accounts (counters, latency histogram, access
   log line), and tells the connection it is done (``ClientSide.exchange_done``).

``ClientSide`` is what an exchange needs of its client connection. The connection class
derives from it, so that where this module is compiled (``exchange.pxd``) the calls between
the two are C calls, without this module importing the connection's.

No logging on the per-request path.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Protocol, cast

import orjson

from lb.histogram import LATENCY_BOUNDS
from lb.http import RequestHead, ResponseHead, ResponseParser, error_response
from lb.http.framing import HEAD as MESSAGE_HEAD
from lb.http.request import DirectHandler
from lb.http.rewrite import client_response_out, replace_header, upstream_request_head
from lb.model import Backend
from lb.proxy.context import HttpContext
from lb.proxy.edge import UpstreamTls, open_upstream, proxy_header_for
from lb.proxy.idle import IdleConnection, IdleUpstreams
from lb.proxy.peer import peer_closed
from lb.proxy.pool import PoolRuntime
from lb.proxyproto import Address
from lb.tls import subject_of

#: A whole response whose body is at most this long goes out joined to its head, in one write.
JOIN_BODY = 16 * 1024

IDEMPOTENT = frozenset({b"GET", b"HEAD", b"PUT", b"DELETE", b"OPTIONS", b"TRACE"})
RETRY_AFTER = 1

# Client connection states (ClientSide.state).
IDLE = 0  # between requests, nothing received
HEAD = 1  # part of a request head received
ACTIVE = 2  # an exchange is in progress
TUNNEL = 3  # upgraded; the Tunnel owns both transports now
CLOSED = 4


def latency_bucket(elapsed: float) -> int:
    """``bisect_left(LATENCY_BOUNDS, elapsed)`` (:func:`lb.histogram.latency_bucket`), as a
    C loop where this module is compiled: most responses fall in the first buckets, and it runs
    per response."""
    i = 0
    for bound in LATENCY_BOUNDS:
        if elapsed <= bound:
            return i
        i += 1
    return i


class ListenerView(Protocol):
    """What an exchange uses of its listener (``lb.proxy.listener.Listener``)."""

    pools: dict[str, PoolRuntime]
    connect_failures: int
    upstream_tls: dict[str, UpstreamTls]  # pools with tls = true (lb/proxy/edge.py)

    def report_failure(
        self, pool: PoolRuntime, backend: Backend, kind: str, exc: BaseException | None
    ) -> None: ...


class ClientSide(DirectHandler):
    """The client connection as an exchange sees it (``HttpClientProtocol`` implements it);
    its request parser calls it as a ``DirectHandler``."""

    __slots__ = (
        "client_ip",
        "ctx",
        "listener",
        "proxied",
        "state",
        "through",
        "transport",
        "upstream_full",
        "write_paused",
    )

    def __init__(self, listener: ListenerView, ctx: HttpContext) -> None:
        self.listener = listener
        self.ctx = ctx
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.client_ip = b""
        self.state = IDLE
        self.write_paused = False
        # The upstream's write buffer is over its high-water mark: request body flow control
        # holds the client's reading (HttpUpstreamProtocol.pause_writing).
        self.upstream_full = False
        # Response bodies go to the transport straight from the read buffer (ReadBuffer): its
        # high-water mark is 0 from the first such body on.
        self.through = False
        # (source, destination) from a PROXY header (lb/proxy/edge.py), or None
        self.proxied: tuple[Address, Address | None] | None = None

    def proxied_by(self, source: Address, destination: Address | None) -> None:
        """A PROXY header named the client (before ``connection_made``)."""
        self.client_ip = source[0].encode()
        self.proxied = (source, destination)

    def proxy_header(self, version: str) -> bytes:
        """The PROXY header a ``send_proxy`` pool's backend gets for this client."""
        return proxy_header_for(version, self.proxied, self.transport)

    def exchange_done(self, now: float) -> None:
        """The exchange ended (its response is out, its request read): keep alive or close."""
        raise NotImplementedError

    def close_now(self) -> None:
        """Close after what was written (the exchange answered an error itself)."""
        raise NotImplementedError

    def abort(self) -> None:
        raise NotImplementedError

    def tunnel(self, upstream: asyncio.Transport, data: bytes) -> None:
        """``101 Switching Protocols``: relay bytes both ways from now on."""
        raise NotImplementedError


class Exchange:
    """One request and its response; see the module docstring."""

    __slots__ = (
        "backend",
        "conn",
        "connect_task",
        "ctx",
        "done",
        "head",
        "keep_alive",
        "key",
        "out_head",
        "pending",
        "pool",
        "request_complete",
        "request_id",
        "response_started",
        "retries",
        "set_cookie",
        "status",
        "t_mark",
        "t_start",
        "tried",
        "upstream",
        "upstream_head",
        "wait_handle",
    )

    def __init__(self, conn: ClientSide, head: RequestHead | None, t_start: float) -> None:
        self._init(conn, head, t_start)

    def _init(self, conn: ClientSide, head: RequestHead | None, t_start: float) -> None:
        """What ``__init__`` does (:func:`new_exchange` calls it without the type call)."""
        self.conn = conn
        self.ctx = conn.ctx
        self.head = head
        # t_start is when the head started to arrive (or the previous response ended, for a
        # pipelined request): close enough, and it saves a clock read per request. t_mark is
        # when the request went upstream (the response timeout and latency count from it).
        self.t_start = t_start
        self.t_mark = t_start
        self.pool: PoolRuntime | None = None
        self.backend: Backend | None = None
        self.upstream: HttpUpstreamProtocol | None = None
        self.connect_task: asyncio.Task[None] | None = None
        self.key: bytes | None = None
        self.pending: list[bytes] | None = None
        self.tried: list[Backend] = []
        self.upstream_head = b""
        self.request_id = b""
        self.set_cookie = b""
        self.out_head: bytes | None = None  # a response head that goes out with the body
        self.status = 0
        self.retries = 0
        self.request_complete = False
        self.response_started = False
        self.done = False
        self.keep_alive = False  # (start() says, from the head)
        # While queued for a backend slot (PoolRuntime.enqueue): the timer that ends the wait.
        self.wait_handle: asyncio.TimerHandle | None = None

    # -- the request side (from the client connection) ----------------------------------------

    def start(self) -> None:
        head = self.head
        assert head is not None
        ctx = self.ctx
        if ctx.redirect is not None:
            self.respond_redirect(ctx.redirect)
            return
        self.keep_alive = head.keep_alive and not ctx.stopping
        pool_name = ctx.router.match(head.host, head.path) if ctx.routed else ctx.default_pool
        pool = ctx.pools.get(pool_name) if pool_name is not None else None
        if pool is None:
            self.respond_error(404, "no route matches this request")
            return
        self.pool = pool
        if pool.needs_key:
            self.key = self._hash_key(pool, head)
        self.upstream_head, self.request_id = upstream_request_head(
            head, self.conn.client_ip, ctx.proto, None, ctx.via
        )
        if ctx.subject_header is not None:
            # mTLS: the verified subject, never one the client sent itself
            subject = subject_of(self.conn.transport.get_extra_info("peercert"))
            self.upstream_head = replace_header(
                self.upstream_head, ctx.subject_header, subject.encode() if subject else None
            )
        self._dispatch()

    def request_body(self, data: bytes) -> None:
        if self.pending is not None:
            self.pending.append(data)
            self.conn.transport.pause_reading()
        elif self.upstream is not None:
            self.upstream.transport.write(data)
            # The response timeout counts from the request's last byte: an upload that keeps
            # moving is not the backend being slow (HAProxy's timeout server and nginx's
            # proxy_read_timeout do not cut it either).
            self.t_mark = self.ctx.clock()
        # else: the response already ended (the backend answered early): drop the rest.

    def request_end(self) -> None:
        self.request_complete = True
        if self.done:
            # The response finished before the request did (an early answer): the connection
            # cannot be trusted for another request (keep_alive is off).
            self.conn.exchange_done(self.ctx.clock())

    def request_error(self, status: int, reason: str) -> None:
        """The request turned out malformed (a bad chunk, a body over the limit)."""
        if self.response_started:
            self.conn.abort()
            return
        self._detach(True)
        self._release_backend()
        self.respond_error(status, reason)

    # -- choosing and reaching a backend ------------------------------------------------------

    def _hash_key(self, pool: PoolRuntime, head: RequestHead) -> bytes | None:
        kind = pool.key_kind
        if kind == "source_ip":
            return self.conn.client_ip
        if kind == "path":
            return head.path
        if kind == "header":
            return head.get(pool.key_name)
        return head.cookie(pool.key_name)

    def _pick_sticky(self, pool: PoolRuntime) -> Backend | None:
        cookie_name = pool.sticky_cookie
        if cookie_name is not None and not self.tried:
            assert self.head is not None
            token = self.head.cookie(cookie_name)
            if token is not None:
                b = pool.by_token.get(token)
                if b is not None and b.eligible and not b.full:
                    return b
        b = pool.pick(self.key, self.tried)
        if b is not None and cookie_name is not None:
            self.set_cookie = pool.sticky_header(b)
        return b

    def _dispatch(self) -> None:
        pool = self.pool
        assert pool is not None
        if pool.sticky_cookie is not None:
            backend = self._pick_sticky(pool)
        elif self.tried:
            backend = pool.pick_retry(self.key, self.tried)
        else:
            # The first try: ask the strategy straight away; PoolRuntime.pick handles the rest
            # (panic mode when nothing is eligible, backends at their limit).
            backend = pool.strategy.pick(self.key)
            if backend is None or (pool.limited and backend.full):
                backend = pool.pick(self.key)
        if backend is None:
            self._wait_or_refuse(pool)
            return
        self.tried.append(backend)
        self.backend = backend
        pool.acquire(backend)
        self._use(backend)

    def _wait_or_refuse(self, pool: PoolRuntime) -> None:
        """Nothing to pick: wait in the pool's queue (every eligible backend is at its limit,
        or none is eligible and the pool holds), or answer now."""
        if self.tried and not (pool.eligible and pool.limited):
            self.respond_error(502, "no backend could be reached")
            return
        timeout = pool.enqueue(self)
        if not timeout:
            self.respond_busy("no backend is available" if not pool.eligible else "queue full")
            return
        if self.pending is None:
            self.pending = [self.upstream_head]
        # Reading goes on (a body pauses it, in request_body; pipelined requests are stashed
        # by the parser, bounded), so that a client that leaves is seen at once.
        self.wait_handle = self.ctx.loop.call_later(timeout, self._wait_expired)

    def granted(self, backend: Backend) -> None:
        """A slot came free in the queue (the pool acquired ``backend`` for this request)."""
        handle = self.wait_handle
        if handle is not None:
            self.wait_handle = None
            handle.cancel()
        pool = self.pool
        assert pool is not None
        if pool.sticky_cookie is not None:
            self.set_cookie = pool.sticky_header(backend)
        self.tried.append(backend)
        self.backend = backend
        self.t_mark = self.ctx.clock()  # the upstream time counts from here, not the wait
        self._use(backend)

    def client_gone(self) -> bool:
        """While queued: the client closed, though reading was paused (a request body: it
        waits in ``pending`` after the head). Without a body, reading goes on and the close
        is seen as it comes, so there is nothing to look at."""
        pending = self.pending
        return pending is not None and len(pending) > 1 and peer_closed(self.conn.transport)

    def drop(self) -> None:
        self.conn.abort()  # connection_lost -> client_lost: it leaves the queue

    def _wait_expired(self) -> None:
        self.wait_handle = None
        pool = self.pool
        assert pool is not None
        if pool.expire(self):
            self.respond_busy(
                "no backend became available in time"
                if not pool.eligible
                else "no backend slot came free in time"
            )

    def _use(self, backend: Backend) -> None:
        """Send the request to ``backend`` (acquired): an idle pooled connection, or a new one."""
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
                    self.conn.transport.resume_reading()
        else:
            if self.pending is None:
                self.pending = [self.upstream_head]
            self.conn.transport.pause_reading()
            self.connect_task = self.ctx.loop.create_task(self._connect(backend))

    async def _connect(self, backend: Backend) -> None:
        pool = self.pool
        assert pool is not None
        ctx = self.ctx
        conn = HttpUpstreamProtocol(backend, ctx.upstreams)
        # (Not an asyncio.Protocol subclass, so that it can be compiled; it has the methods.)
        factory = cast(Callable[[], asyncio.Protocol], lambda: conn)
        tls = self.conn.listener.upstream_tls.get(pool.name)
        send_proxy = pool.config.send_proxy  # (such connections are never pooled: one client's)
        preamble = None if send_proxy is None else self.conn.proxy_header(send_proxy)
        try:
            async with asyncio.timeout(ctx.connect_timeout):
                transport, _ = await open_upstream(ctx.loop, factory, backend, tls, preamble)
        except (OSError, TimeoutError) as exc:
            backend.connect_failures += 1
            listener = self.conn.listener
            listener.connect_failures += 1
            listener.report_failure(pool, backend, "connect", exc)
            self._retry_or_fail(502 if isinstance(exc, OSError) else 504, "connect")
            return
        if self.conn.state == CLOSED:
            transport.close()
            return
        pending = self.pending or []
        self.pending = None
        self.t_mark = ctx.clock()  # the response timeout counts from now
        self._attach(conn)
        cast(asyncio.WriteTransport, transport).writelines(pending)
        if not self.request_complete:
            self.conn.transport.resume_reading()

    def _attach(self, conn: HttpUpstreamProtocol) -> None:
        head = self.head
        assert head is not None
        self.upstream = conn
        conn.exchange = self
        conn.requests += 1
        if self.conn.write_paused:
            conn.transport.pause_reading()
        # (positional: this runs per request; head_request, upgrade, dechunk)
        conn.parser.start(head.method == b"HEAD", head.upgrade is not None, head.version == b"1.0")

    def _detach(self, close: bool) -> HttpUpstreamProtocol | None:
        """Let go of the upstream connection (closing it: its state is unknown)."""
        up = self.upstream
        if up is not None:
            self.upstream = None
            up.exchange = None
            if close:
                up.close()
        return up

    def _retry_or_fail(self, status: int, why: str) -> None:
        """The request never reached the backend (or provably was not processed)."""
        self._release_backend()
        pool = self.pool
        assert pool is not None and self.head is not None
        if self.conn.state == CLOSED:
            return
        if self.retries < pool.retries and pool.retry_allowed():
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
            self.backend = None
            pool = self.pool
            assert pool is not None
            pool.release(b)

    # -- the response side (from HttpUpstreamProtocol) ----------------------------------------

    def response_interim(self, head: ResponseHead) -> None:
        assert self.head is not None
        if self.head.version == b"1.1":
            self.conn.transport.write(head.raw)
            self.response_started = True

    def _client_out(self, head: ResponseHead, body: bytes) -> bytes:
        """The response head as the client gets it, then ``body`` (also notes the status)."""
        req = self.head
        assert req is not None
        self.status = head.status
        self.response_started = True
        if head.close_delimited or not self.request_complete:
            # (an answer that starts before the request ended: the connection closes after the
            # request, so the client is told at once)
            self.keep_alive = False
        lines = self.set_cookie
        hsts = self.ctx.hsts
        if hsts is not None:
            lines = lines + hsts
        return client_response_out(
            head, not self.keep_alive, self.request_id, lines, req.version == b"1.0", body
        )

    def response_head(self, head: ResponseHead) -> None:
        out = self._client_out(head, b"")
        if head.no_body:
            self.conn.transport.write(out)
        else:
            self.out_head = out  # it goes out with the first body bytes

    def response_body(self, data: bytes) -> None:
        head = self.out_head
        if head is None:
            self.conn.transport.write(data)
        else:  # head and first body bytes in one writev: one syscall, one packet
            self.out_head = None
            self.conn.transport.writelines((head, data))

    def response_whole(self, head: ResponseHead, body: bytes, reusable: bool) -> None:
        """A whole response from one buffer: one write, then the end of the exchange."""
        if len(body) <= JOIN_BODY:
            # One buffer: the loop writes it at once (uvloop's direct write), where a list of
            # two takes its gathered write, which costs more than copying a small body.
            self.conn.transport.write(self._client_out(head, body))
        else:
            self.conn.transport.writelines((self._client_out(head, b""), body))
        self.response_end(reusable)

    def flush_head(self) -> None:
        head = self.out_head
        if head is not None:
            self.out_head = None
            self.conn.transport.write(head)

    def response_end(self, reusable: bool) -> None:
        if self.out_head is not None:
            self.flush_head()  # an empty body
        up = self._detach(False)
        assert up is not None
        pool = self.pool
        assert pool is not None
        ctx = self.ctx
        ctx.bytes_out += up.parser.bytes_received
        now = ctx.clock()
        b = self.backend
        if b is not None:
            b.responses[self.status // 100] += 1
            elapsed = now - self.t_mark
            b.latency[latency_bucket(elapsed)] += 1
            b.latency_sum += elapsed
            if pool.tracks_latency:  # (peak_ewma: a C flag test for the others)
                pool.strategy.on_latency(b, elapsed, now)  # type: ignore[attr-defined]
            if b.failure_streak and self.status < 500:
                pool.note_success(b)
            elif self.status >= 500 and pool.report_5xx:
                self.conn.listener.report_failure(pool, b, "5xx", None)
        if reusable and self.request_complete and up.requests < pool.max_requests:
            if self.conn.write_paused:
                up.transport.resume_reading()  # paused for this client, not for the pool
            ctx.upstreams.release(up, pool.max_idle, pool.idle_timeout, now)
        else:
            up.close()
        if b is not None:
            # After the connection went idle: a request waiting for this slot reuses it.
            self.backend = None
            pool.release(b)
        self.account(now)
        self.done = True
        if self.request_complete:
            self.conn.exchange_done(now)
        else:
            # The backend answered before reading the whole request: drop the rest of the body
            # as it arrives, then close (request_end); the connection is out of step.
            self.keep_alive = False

    def response_upgrade(self, data: bytes) -> None:
        self.flush_head()
        up = self._detach(False)
        assert up is not None
        self.account(self.ctx.clock())
        self._release_backend()
        self.done = True
        self.conn.tunnel(up.transport, data)

    def response_error(self, reason: str) -> None:
        up = self._detach(False)
        pool = self.pool
        assert pool is not None and self.head is not None
        if self.response_started:
            self.flush_head()
            self._release_backend()
            self.conn.abort()
            return
        b = self.backend
        if b is not None:
            self.conn.listener.report_failure(pool, b, "reset", None)
        if (
            up is not None
            and up.parser.bytes_received == 0
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

    # -- own answers, timeouts, teardown, accounting ------------------------------------------

    def respond_error(self, status: int, reason: str, retry_after: int | None = None) -> None:
        self.status = status
        head = self.head
        answer = error_response(
            status, reason, retry_after, body=head is None or head.method != b"HEAD"
        )
        self.ctx.bytes_out += len(answer)
        self.conn.transport.write(answer)
        self.account(self.ctx.clock())
        self.done = True
        self.conn.close_now()

    def respond_redirect(self, redirect: tuple[int, bytes]) -> None:
        """``redirect_https``: the same host and target on https (then close)."""
        status, port = redirect
        head = self.head
        assert head is not None
        host = head.host
        if not host:
            self.respond_error(400, "a redirect to https needs a Host header")
            return
        if host.startswith(b"["):
            host = host[: host.find(b"]") + 1]  # an IPv6 literal, without its port
        else:
            name, _, p = host.rpartition(b":")
            host = name if name and p.isdigit() else host
        target = head.target if head.target.startswith(b"/") else b"/"
        location = b"https://" + host + port + target
        reason = b"Permanent Redirect" if status == 308 else b"Moved Permanently"
        answer = (
            b"HTTP/1.1 %d %s\r\nLocation: %s\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            % (
                status,
                reason,
                location,
            )
        )
        self.status = status
        self.ctx.bytes_out += len(answer)
        self.conn.transport.write(answer)
        self.account(self.ctx.clock())
        self.done = True
        self.conn.close_now()

    def respond_busy(self, reason: str) -> None:
        """503 with Retry-After, keeping the connection for the next request when the request
        is (or will be, having no body) read whole: a full queue is not the client's fault."""
        head = self.head
        assert head is not None
        keep = (
            self.keep_alive
            and head.version == b"1.1"
            and (self.request_complete or not head.has_body)
        )
        self.status = 503
        self.pending = None
        answer = error_response(
            503, reason, RETRY_AFTER, body=head.method != b"HEAD", close=not keep
        )
        self.ctx.bytes_out += len(answer)
        self.conn.transport.write(answer)
        now = self.ctx.clock()
        self.account(now)
        self.done = True
        if not keep:
            self.keep_alive = False
            self.conn.close_now()
        elif self.request_complete:
            self.conn.exchange_done(now)
        # else: request_end (it comes next: no body) ends the exchange and keeps alive.

    def check_timeout(self, now: float) -> None:
        """Called by the listener's sweep: the backend must start answering in time (504),
        counted from the request's last byte; a request body that stops coming for as long is
        the client's doing (408, and no failure counted against the backend)."""
        up = self.upstream
        ctx = self.ctx
        if (
            up is not None
            and up.parser.bytes_received == 0
            and now - self.t_mark > (ctx.response_timeout)
        ):
            self._detach(True)
            stalled = not self.request_complete  # the client's wait, not the backend's
            pool, b = self.pool, self.backend
            if not stalled and pool is not None and b is not None:
                self.conn.listener.report_failure(pool, b, "timeout", None)
                if pool.tracks_latency:  # what it made us wait is its latency
                    pool.strategy.on_latency(b, now - self.t_mark, now)  # type: ignore[attr-defined]
            self._release_backend()
            if self.response_started:
                self.conn.abort()
            elif stalled:
                self.respond_error(408, "the request body stopped arriving")
            else:
                self.respond_error(504, "the backend did not answer in time")

    def client_lost(self) -> None:
        """The client connection is gone: nothing of this exchange can be reused."""
        handle = self.wait_handle
        if handle is not None:  # waiting in the queue: leave it at once
            self.wait_handle = None
            handle.cancel()
            pool = self.pool
            assert pool is not None
            pool.leave(self)
        task = self.connect_task
        if task is not None and not task.done():
            task.cancel()
        self._detach(True)
        self._release_backend()

    def abort_upstream(self) -> None:
        up = self.upstream
        if up is not None:
            up.close()

    def account(self, now: float) -> None:
        ctx = self.ctx
        ctx.responses[self.status // 100] += 1
        head = self.head
        if head is not None:
            ctx.bytes_in += len(head.raw) + head.body_bytes
        lines = ctx.access_lines
        if lines is not None:
            lines.append(
                orjson.dumps(
                    {
                        "time": round(time.time(), 3),
                        "client": self.conn.client_ip.decode(),
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


def new_exchange(conn: ClientSide, head: RequestHead | None, t_start: float) -> Exchange:
    """``Exchange(conn, head, t_start)``. Where this module is compiled, a C call that makes
    the object without the type call (no argument tuple to build and parse, no ``__init__``
    looked up): it runs per request."""
    ex = Exchange.__new__(Exchange)
    ex._init(conn, head, t_start)
    return ex


#: Bytes one read from a backend may bring: large, so that a big body takes few reads (and few
#: Python calls); one buffer for the whole worker, so that it costs nothing per connection.
READ_SIZE = 256 * 1024
#: A read larger than this that starts with a response head is split after the head.
SPLIT_HEAD = 4096


class ReadBuffer:
    """The buffer every ``HttpUpstreamProtocol`` of a worker reads into (uvloop's
    ``BufferedProtocol`` interface: ``get_buffer``, then ``buffer_updated``).

    Body bytes that need no framing work (:meth:`lb.http.framing.MessageParser.passes`) go
    from it to the client's transport as a ``memoryview`` of it, uncopied; everything else
    (heads, chunk lines, the end of a body with more behind it) is copied out as ``bytes`` for
    the parser, as a plain ``data_received`` would have had it. Sharing one buffer is safe
    because one thread runs the loop and a read's bytes are used up before the next read
    starts: written whole to the kernel (the client's transport writes straight through, with
    a high-water mark of 0), or copied, or else still held by the transport, in which case the
    buffer is handed over to it and a new one made (``renew``).
    """

    __slots__ = ("buf", "view")

    def __init__(self) -> None:
        self.buf = bytearray(READ_SIZE)
        self.view = memoryview(self.buf)

    def renew(self) -> None:
        """A transport kept part of the last read to write later: leave it this buffer."""
        self.buf = bytearray(READ_SIZE)
        self.view = memoryview(self.buf)


READ_BUFFER = ReadBuffer()


class HttpUpstreamProtocol(IdleConnection):
    """One keep-alive connection to a backend. Events go to the attached exchange, if any.

    On uvloop it reads into the worker's ``ReadBuffer`` (``get_buffer``/``buffer_updated``);
    other loops call ``data_received``, with the same outcome."""

    __slots__ = ("exchange", "parser", "requests", "transport", "upstreams")

    def __init__(self, backend: Backend, upstreams: IdleUpstreams) -> None:
        # IdleConnection's fields, set here rather than through its __init__ (compiled, that
        # is a Python call per connection; keep in step with IdleConnection.__init__).
        self.backend = backend
        self.closed = False
        self.idle_deadline = 0.0
        self.upstreams = upstreams
        self.exchange: Exchange | None = None
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.parser = ResponseParser(self)
        self.requests = 0

    def reusable(self) -> bool:
        return not self.closed and self.parser.idle

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.parser.feed(data)

    def get_buffer(self, sizehint: int) -> memoryview:
        return READ_BUFFER.view

    def buffer_updated(self, nbytes: int) -> None:
        read = READ_BUFFER
        parser = self.parser
        start = 0
        if parser._state == MESSAGE_HEAD and nbytes > SPLIT_HEAD:
            # A head with much of its body behind it: the parser gets the head (as bytes),
            # the body bytes go on from the buffer (below) rather than being copied twice.
            end = read.buf.find(b"\r\n\r\n", 0, nbytes)
            if end >= 0:
                start = end + 4
                parser.feed(read.view[:start].tobytes())
                if start == nbytes:
                    return
        n = nbytes - start
        ex = self.exchange
        if ex is None or not parser.passes(n):
            parser.feed(read.view[start:nbytes].tobytes())
            return
        # Body bytes only: straight from the read buffer to the client's transport.
        client = ex.conn
        sink = client.transport
        if not client.through:
            # Write at once, and pause this side as soon as the client's socket is full: a
            # write never waits in the transport for a later loop iteration, so the read
            # buffer is usually free again when the write returns.
            client.through = True
            sink.set_write_buffer_limits(0)
        parser.bytes_received += n
        parser.pass_on(read.view[start:nbytes], n)
        if sink.get_write_buffer_size():
            read.renew()  # the transport holds on to (part of) this read

    def eof_received(self) -> bool:
        if self.exchange is None:
            # The backend closed an idle pooled connection. The transport closes after this
            # returns, but connection_lost comes later: a request handled in the same loop
            # iteration must not be given this connection (its parser is closed already).
            self.closed = True
            self.upstreams.discard(self)
        self.parser.feed_eof()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.exchange is None:
            self.upstreams.discard(self)
        elif not self.parser.closed:
            self.parser.feed_eof()

    def pause_writing(self) -> None:
        ex = self.exchange
        if ex is not None:
            ex.conn.upstream_full = True
            ex.conn.transport.pause_reading()

    def resume_writing(self) -> None:
        ex = self.exchange
        if ex is not None:
            ex.conn.upstream_full = False
            ex.conn.transport.resume_reading()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.parser.close()
            self.transport.close()

    # -- ResponseHandler: forward to the exchange ---------------------------------------------

    def on_response_interim(self, head: ResponseHead) -> None:
        if self.exchange is not None:
            self.exchange.response_interim(head)

    def on_response_head(self, head: ResponseHead) -> None:
        if self.exchange is not None:
            self.exchange.response_head(head)

    def on_response_body(self, data: bytes) -> None:
        ex = self.exchange
        if ex is not None:
            ex.response_body(data)

    def on_response_end(self, reusable: bool) -> None:
        if self.exchange is not None:
            self.exchange.response_end(reusable)
        elif not reusable:
            self.close()

    def on_response_whole(self, head: ResponseHead, body: bytes, reusable: bool) -> None:
        if self.exchange is not None:
            self.exchange.response_whole(head, body, reusable)
        elif not reusable:
            self.close()

    def on_response_upgrade(self, data: bytes) -> None:
        if self.exchange is not None:
            self.exchange.response_upgrade(data)

    def on_response_error(self, reason: str) -> None:
        ex = self.exchange
        self.close()
        if ex is not None:
            ex.response_error(reason)
        else:
            self.upstreams.discard(self)

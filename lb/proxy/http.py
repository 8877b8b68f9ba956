"""The L7 proxy's client connection: parsing, pipelining, keep-alive and timeouts.

``HttpClientProtocol`` owns one client connection. Its ``RequestParser`` (``lb/http/``) turns
bytes into request heads and raw body chunks; for each head the connection starts an
``Exchange`` (``lb/proxy/exchange.py``), which routes, picks, reaches a backend, relays the
response and accounts, and tells the connection when it is done. The connection then keeps
the client alive (the parser resumes, and a pipelined request that was waiting is parsed
then) or closes it.

The parser pauses itself after each request, so pipelined requests wait their turn; bytes of
pipelined requests that arrive while a response is in flight are stashed, and reading pauses
when they pass ``MAX_STASH``.

Everything the connection reads from its listener's config comes from the listener's
``HttpContext`` at the moment it is needed (``lb/proxy/context.py``), so a reload reaches a
connection that is already open at its next request; the parser's limits are swapped before
the next request is parsed.

Timeouts are checked by the listener's sweep (``HttpContext.sweep``): keep-alive idle, the
request head (slowloris, 408), and, through the exchange, the first response byte (504).

Where a C compiler is there, setup.py compiles this module with Cython, with the class layout
in ``http.pxd`` next to it (see docs/architecture.md, "The compiled fast path"): every
attribute the class sets must be declared there too, and the protocol does not subclass
``asyncio.Protocol`` (a compiled class cannot; uvloop needs only the methods).
"""

from __future__ import annotations

import asyncio
from typing import Protocol, cast

from lb.http import RequestHead
from lb.proxy.context import HttpContext
from lb.proxy.edge import Edge
from lb.proxy.exchange import (
    ACTIVE,
    CLOSED,
    HEAD,
    IDLE,
    TUNNEL,
    ClientSide,
    Exchange,
    ListenerView,
    new_exchange,
)
from lb.proxy.tunnel import Tunnel, TunnelOwner

# Bytes of pipelined requests held while a response is in flight before reading pauses.
MAX_STASH = 256 * 1024


class HttpListener(ListenerView, TunnelOwner, Protocol):
    """What a connection uses of its listener (``lb.proxy.listener.Listener``)."""

    #: TLS and the PROXY protocol in front of the connection, or None (read per connection:
    #: a reload may turn them on or off).
    edge: Edge | None


class HttpFactory:
    """The protocol factory of an http listener: a new ``HttpClientProtocol`` per accepted
    connection, behind the listener's edge (TLS, PROXY protocol) when it has one. A class,
    so that where this module is compiled the common case (no edge) is one C call, where a
    closure would be two Python calls per connection."""

    __slots__ = ("ctx", "listener")

    def __init__(self, listener: HttpListener, ctx: HttpContext) -> None:
        self.listener = listener
        self.ctx = ctx

    def __call__(self) -> object:
        edge = self.listener.edge
        if edge is None:
            return self.connection()
        return edge.accept(self.connection)

    def connection(self) -> HttpClientProtocol:
        """A client connection: ``HttpClientProtocol(listener, ctx)``, made without the type
        call where this module is compiled (no argument tuple to build and parse)."""
        conn = HttpClientProtocol.__new__(HttpClientProtocol)
        conn._init(self.listener, self.ctx)
        return conn


class HttpClientProtocol(ClientSide):
    """One client connection; see the module docstring."""

    __slots__ = ("client_eof", "exchange", "limits", "loop", "parser", "stash_paused", "t_mark")

    def __init__(self, listener: HttpListener, ctx: HttpContext) -> None:
        self._init(listener, ctx)

    def _init(self, listener: HttpListener, ctx: HttpContext) -> None:
        """What ``__init__`` does (``HttpFactory.connection`` calls it without the type
        call)."""
        # ClientSide's fields, set here rather than through ClientSide.__init__: compiled,
        # that call is a Python method call with its argument tuple, once per connection.
        # (Keep in step with ClientSide.__init__ in lb/proxy/exchange.py.)
        self.listener = listener
        self.ctx = ctx
        self.transport = None  # type: ignore[assignment]
        self.client_ip = b""
        self.state = IDLE
        self.write_paused = False
        self.upstream_full = False
        self.through = False
        self.proxied = None
        # (Read through self.ctx, the typed field, where compiled: C field reads and a C call
        # of spawn, not Python attribute lookups on the argument.)
        self.loop = self.ctx.loop
        self.limits = self.ctx.limits
        self.parser = self.ctx.parser_template.spawn(self)  # (RequestParser(self, limits))
        self.t_mark = self.ctx.clock()  # when the current state began (timeouts)
        self.client_eof = False
        # Reading is paused because pipelined requests stashed more than MAX_STASH.
        self.stash_paused = False
        self.exchange: Exchange | None = None

    # -- client transport -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # (No typing.cast on this path: compiled, a cast is a Python call like any other.)
        self.transport = transport  # type: ignore[assignment]
        if not self.ctx.admit(self):
            self.state = CLOSED
            transport.close()
            return
        if self.proxied is None:  # (else a PROXY header named the client)
            peer = transport.get_extra_info("peername")
            # (a str for IPv4 and IPv6; anything else, such as a unix socket's, goes through str)
            host = peer[0] if peer else "unknown"
            self.client_ip = host.encode() if type(host) is str else str(host).encode()

    def data_received(self, data: bytes) -> None:
        state = self.state
        if state == IDLE:
            self.state = HEAD
            self.t_mark = self.ctx.clock()
        elif state == ACTIVE and self.parser.paused:
            # Pipelined requests arriving while a response is in flight are stashed by the
            # parser; stop reading a client that gets far ahead of us.
            self.parser.feed(data)
            if self.parser.pending_bytes > MAX_STASH:
                self.stash_paused = True
                self.transport.pause_reading()
            return
        self.parser.feed(data)

    def eof_received(self) -> bool:
        ex = self.exchange
        if ex is not None and ex.wait_handle is not None:
            # The client went away while its request waited for a backend slot: it leaves
            # the queue now (HAProxy's abortonclose, for queued requests).
            self.exchange = None
            ex.client_lost()
            self.close_now()
            return False
        self.client_eof = True
        self.parser.feed_eof()
        # Keep our side open while a response is on its way; close otherwise.
        return self.state == ACTIVE

    def pause_writing(self) -> None:
        self.write_paused = True
        ex = self.exchange
        if ex is not None and ex.upstream is not None:
            ex.upstream.transport.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        ex = self.exchange
        if ex is not None:
            if ex.upstream is not None:
                ex.upstream.transport.resume_reading()
        elif self.state == IDLE:  # exchange_done held the next request back: go on
            self.read_next()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.state == TUNNEL:
            return  # the Tunnel owns the transports and the release
        self.state = CLOSED
        ex = self.exchange
        if ex is not None:
            self.exchange = None
            ex.client_lost()
        # (No parser.close() first: unbind stops the parser for good too, and nothing reads
        # what close would clear. It frees this connection by reference counting, not the GC.)
        self.parser.unbind()
        self.ctx.release(self)

    def uses(self, backend: object) -> bool:
        ex = self.exchange
        return ex is not None and ex.backend is backend

    def abort(self) -> None:
        ex = self.exchange
        if ex is not None:
            ex.abort_upstream()
        self.transport.abort()

    def close_when_idle(self) -> None:
        """Graceful stop: close now if idle, else after the response in flight."""
        if self.state in (IDLE, HEAD):
            self.transport.close()
        elif self.exchange is not None:
            self.exchange.keep_alive = False

    # -- RequestHandler ---------------------------------------------------------------------

    def on_request_head(self, head: RequestHead) -> None:
        self.state = ACTIVE
        self.ctx.requests += 1
        ex = new_exchange(self, head, self.t_mark)
        self.exchange = ex
        ex.start()

    def on_request_body(self, data: bytes) -> None:
        ex = self.exchange
        if ex is not None:
            ex.request_body(data)

    def on_request_end(self) -> None:
        ex = self.exchange
        if ex is not None:
            ex.request_end()

    def on_request_error(self, status: int, reason: str) -> None:
        ex = self.exchange
        if ex is None:  # before a whole head: no exchange yet, answer through a bare one
            ex = self.exchange = new_exchange(self, None, self.t_mark)
        ex.request_error(status, reason)

    # -- ClientSide: what the exchange calls --------------------------------------------------

    def exchange_done(self, now: float) -> None:
        ex = self.exchange
        self.exchange = None
        keep = ex is not None and ex.keep_alive
        if not keep or self.client_eof or self.ctx.stopping or self.state == CLOSED:
            self.close_now()
            return
        self.state = IDLE
        self.t_mark = now
        ctx = self.ctx
        if self.limits is not ctx.limits:  # a reload changed them: from the next request on
            self.limits = ctx.limits
            self.parser.set_limits(ctx.limits)
        self.upstream_full = False  # (that flow control was the exchange's)
        if self.write_paused:
            # The client does not read its responses: its next request, and reading it,
            # wait for resume_writing (else each pipelined request adds a response to the
            # transport's buffer, without bound).
            self.transport.pause_reading()
            return
        self.read_next()

    def read_next(self) -> None:
        """Between requests: read again and start a pipelined request, if one is stashed."""
        parser = self.parser
        if not self.stash_paused or parser.pending_bytes <= MAX_STASH:
            # (Reading resumes before the next request starts, which may pause it again.)
            self.stash_paused = False
            self.transport.resume_reading()
        # else: a client that pipelines faster than its responses go out stays paused until
        # the stash is down to MAX_STASH (it would otherwise gain a read per response).
        parser.resume()  # may start the next (pipelined) request right here
        if (
            self.stash_paused
            and not parser.paused
            and not self.upstream_full
            and self.state != CLOSED
        ):  # the stash ran out inside a request: read the rest
            self.stash_paused = False
            self.transport.resume_reading()

    def close_now(self) -> None:
        self.state = CLOSED
        self.parser.close()
        self.transport.close()

    def tunnel(self, upstream: asyncio.Transport, data: bytes) -> None:
        self.state = TUNNEL
        self.exchange = None
        if data:
            self.transport.write(data)
        leftover = self.parser.detach()
        self.parser.unbind()
        Tunnel(cast(HttpListener, self.listener), self, self.transport, upstream, leftover)

    # -- timeouts (the listener's sweep) ------------------------------------------------------

    def check_timeouts(self, now: float) -> None:
        state = self.state
        ctx = self.ctx
        if state == IDLE:
            if now - self.t_mark > ctx.keepalive_timeout or ctx.stopping:
                self.state = CLOSED
                self.transport.close()
        elif state == HEAD:
            if now - self.t_mark > ctx.header_timeout:
                ex = self.exchange = new_exchange(self, None, self.t_mark)
                ex.respond_error(408, "the request head did not arrive in time")
        elif state == ACTIVE:
            current = self.exchange
            if current is not None:
                current.check_timeout(now)

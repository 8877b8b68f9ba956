"""What the connections of one http listener share, derived from its config.

``HttpContext`` holds the objects that every client connection and exchange of a listener reads
per request: the worker's pools by name, the router, the request limits (and a request parser
holding them, that new connections' parsers are spawned from), the ``Via`` value, the timeouts,
the access log, the idle upstream connections, and the listener's counters. It is built from
the listener's config when the listener starts, and :meth:`HttpContext.reconfigure` rebuilds
every derived object in place when a reload changes that config. Per-request code always reads
them from here (never a copy of its own), so a kept connection sees the new values at its next
request; the request parser's limits are the one copy, and a connection swaps them before it
parses its next request (``limits`` is a new object after every reload).

The timeout sweep (keep-alive idle, 408, 504) is one timer per listener, not one per request.

Where a C compiler is there, setup.py compiles this module with Cython (``context.pxd``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol

from lb.config import ListenerConfig
from lb.http import RequestLimits, RequestParser
from lb.proxy.accesslog import AccessLog
from lb.proxy.idle import IdleUpstreams
from lb.proxy.pool import PoolRuntime
from lb.routing import Router


class TimedConnection(Protocol):
    def check_timeouts(self, now: float) -> None: ...


class HttpContext:
    """Per-listener shared objects for HTTP connections; see the module docstring."""

    def __init__(
        self,
        config: ListenerConfig,
        loop: asyncio.AbstractEventLoop,
        connections: set[TimedConnection],
        access: AccessLog,
        pools: dict[str, PoolRuntime],
    ) -> None:
        self.loop = loop
        # The worker's pools by name (the listener's dict: the worker changes it in place).
        self.pools = pools
        # loop.time, bound once: a call of it skips the method lookup of loop.time() (it
        # runs twice per new connection).
        self.clock: Callable[[], float] = loop.time
        # The listener's set of open connections (shared: tcp relays and tunnels use it too).
        self.connections = connections
        # Connections admitted and refused (at max_connections) through admit(); the
        # listener adds them to its own.
        self.accepted = 0
        self.rejected = 0
        # Called when release() leaves no connection open (the listener waits for that when
        # it stops), or None.
        self.on_empty: Callable[[], None] | None = None
        self.access = access
        self.upstreams = IdleUpstreams(loop)
        self.stopping = False
        # Counters (plain ints): requests, responses by class, retries, bytes.
        self.requests = 0
        self.responses = [0, 0, 0, 0, 0, 0]
        self.retries = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.reconfigure(config)
        self._sweep_handle = loop.call_later(self._sweep_interval, self.sweep)

    def reconfigure(self, cfg: ListenerConfig) -> None:
        """Derive everything per-request code reads from ``cfg`` (start, and every reload)."""
        self.config = cfg
        self.router = Router(cfg.routes, cfg.pool)
        # Read per request: without routes, every request goes to the default pool (C fields
        # where compiled, not the router's Python attributes).
        self.routed = bool(self.router.routes)
        self.default_pool = self.router.default
        self.limits = RequestLimits(
            max_request_line=cfg.max_request_line,
            max_header_bytes=cfg.max_header_bytes,
            max_headers=cfg.max_headers,
            max_body_bytes=cfg.max_body_bytes,
        )
        # What a new connection's request parser is spawned from (it holds the limits).
        self.parser_template = RequestParser.template(self.limits)
        self.via = f"1.1 {cfg.via}".encode() if cfg.via else None
        # The edge (docs/config.md, "TLS"): what the exchange adds or answers per request.
        tls = cfg.tls
        self.proto = b"https" if tls is not None else b"http"
        self.hsts = (
            b"Strict-Transport-Security: " + tls.hsts.encode() + b"\r\n"
            if tls is not None and tls.hsts
            else b""
        )
        self.subject_header = (
            tls.client_subject_header.encode()
            if tls is not None and tls.client_subject_header
            else None
        )
        self.redirect = (
            (cfg.redirect_status, b":%d" % cfg.redirect_port if cfg.redirect_port else b"")
            if cfg.redirect_https
            else None
        )
        self.max_connections = cfg.max_connections
        self.keepalive_timeout = cfg.keepalive_timeout
        self.header_timeout = cfg.header_timeout
        self.response_timeout = cfg.response_timeout
        self.connect_timeout = cfg.connect_timeout
        self.idle_timeout = cfg.idle_timeout
        # The access log's line buffer (None: off), read per request; the listener has
        # reconfigured the log itself before this runs.
        self.access_lines = self.access.lines
        shortest = min(self.header_timeout, self.response_timeout, self.keepalive_timeout)
        self._sweep_interval = min(1.0, max(0.05, shortest / 4))

    def admit(self, conn: TimedConnection) -> bool:
        """A new connection: tracked, or refused (False) at ``max_connections``. What
        ``Listener.admit`` does, in C where compiled: it runs per connection."""
        conns = self.connections
        if len(conns) >= self.max_connections:
            self.rejected += 1
            return False
        self.accepted += 1
        conns.add(conn)
        return True

    def release(self, conn: TimedConnection) -> None:
        """A connection ended (``Listener.release``, in C)."""
        conns = self.connections
        conns.discard(conn)
        if not conns and self.on_empty is not None:
            self.on_empty()

    def sweep(self) -> None:
        now = self.loop.time()
        for conn in list(self.connections):
            conn.check_timeouts(now)
        self.upstreams.sweep(now)
        self._sweep_handle = self.loop.call_later(self._sweep_interval, self.sweep)

    def close(self) -> None:
        self._sweep_handle.cancel()
        self.upstreams.close_all()

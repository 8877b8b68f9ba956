"""The edge of a listener: the PROXY header and the TLS handshake, before the connection's own
protocol (``HttpClientProtocol`` or ``TcpClientProtocol``) sees a byte.

Theory of operation
-------------------
A listener with ``[listeners.tls]`` or ``proxy_protocol`` has an :class:`Edge`, derived from
its config when it starts and rebuilt by every reload (``Listener.reconfigure``): new
connections get the new certificates at once, connections already open keep theirs. A
listener without either has none, and its connections go straight to their protocol.

* **TLS only.** The protocol uvloop gets for a new connection is our own
  :class:`lb.proxy.tlsconn.TlsConnection` (compiled where a C compiler is there), which owns
  the connection's ``SSLObject`` and memory BIOs and is the transport the connection's
  protocol writes to. It starts with the default certificate's context; SNI switches the
  context during the handshake (``lb.tls.ServerTls``). A handshake that completes is counted
  by version (and resumed or not), one that fails by reason (``lb.tls.failure_reason``). A
  stalled handshake is closed after ``handshake_timeout``. (It replaced uvloop's
  ``SSLProtocol``: fewer instructions per request, and one record per response.)
* **PROXY protocol.** :class:`ProxyGate` is the first protocol. A peer outside
  ``trusted_proxies`` is closed before any byte is read. A trusted one must send a header
  (``lb.proxyproto``) within ``proxy_protocol_timeout``; what follows the header is the
  client's (or the start of its TLS handshake). The gate then hands the transport over (to
  the TLS protocol, or to the connection's protocol), replays the bytes that came after the
  header, and tells the connection its real client address (``proxied_by``). A refusal is
  counted by reason and closes the connection.

Counters are plain integers on the listener's :class:`EdgeCounters` (kept across reloads);
the worker sends them with the listener's counters (``lb/worker.py``). No logging per
connection.
"""

from __future__ import annotations

import asyncio
import ipaddress
import ssl
from collections.abc import Callable, Mapping
from typing import Any, Protocol, TypeVar, cast

from lb.config import ListenerConfig, PoolConfig
from lb.model import Backend
from lb.proxy.tlsconn import TlsApp, TlsConnection
from lb.proxyproto import REJECT_REASONS, Address, ProxyProtocolError, build, parse
from lb.tls import (
    FAILURE_REASONS,
    HANDSHAKE_VERSIONS,
    ServerOptions,
    ServerTls,
    client_context,
)


class EdgeApp(Protocol):
    """What the edge needs of a connection's protocol."""

    transport: Any

    def connection_made(self, transport: asyncio.BaseTransport) -> None: ...

    def data_received(self, data: bytes) -> None: ...

    def proxied_by(self, source: Address, destination: Address | None) -> None: ...


class EdgeCounters:
    """One listener's TLS and PROXY counters in this worker (cumulative)."""

    __slots__ = ("failures", "handshakes", "proxy_rejected", "resumed")

    def __init__(self) -> None:
        self.handshakes = dict.fromkeys(HANDSHAKE_VERSIONS, 0)
        self.resumed = 0
        self.failures = dict.fromkeys(FAILURE_REASONS, 0)
        self.proxy_rejected = dict.fromkeys(REJECT_REASONS, 0)

    def snapshot(self) -> dict[str, int]:
        """Flat counters for ``wire.ListenerCounters`` (``tls_handshakes_tlsv1_3``, ...)."""
        out = {f"tls_handshakes_{_key(v)}": n for v, n in self.handshakes.items()}
        out["tls_resumed"] = self.resumed
        out.update({f"tls_failures_{r}": n for r, n in self.failures.items()})
        out.update({f"proxy_rejected_{r}": n for r, n in self.proxy_rejected.items()})
        return out


def _key(version: str) -> str:
    return version.lower().replace(".", "_")


class Edge:
    """A listener's TLS contexts and PROXY settings (see the module docstring)."""

    __slots__ = (
        "counters",
        "handshake_timeout",
        "loop",
        "proxy_timeout",
        "tls",
        "trusted",
    )

    def __init__(
        self,
        config: ListenerConfig,
        loop: asyncio.AbstractEventLoop,
        counters: EdgeCounters,
    ) -> None:
        """Raises ``OSError``/``ValueError``/``ssl.SSLError`` for files that went bad since
        the supervisor checked them (the caller keeps the edge it had)."""
        self.loop = loop
        self.counters = counters
        self.tls: ServerTls | None = None
        self.handshake_timeout = 10.0
        t = config.tls
        if t is not None:
            opts = ServerOptions(
                min_version=t.min_version,
                ciphers=t.ciphers,
                client_ca=t.client_ca,
                client_verify=t.client_verify,
                alpn=("http/1.1",) if config.mode == "http" else (),
                session_tickets=t.session_tickets,
            )
            self.tls = ServerTls([(c.cert, c.key) for c in t.certificates], opts)
            self.handshake_timeout = t.handshake_timeout
        self.trusted = (
            [ipaddress.ip_network(c, strict=False) for c in config.trusted_proxies]
            if config.proxy_protocol
            else None
        )
        self.proxy_timeout = config.proxy_protocol_timeout

    def accept(self, app_factory: Callable[[], EdgeApp]) -> asyncio.BaseProtocol:
        """The protocol for a new connection (the listener's protocol factory calls this)."""
        if self.trusted is not None:
            return cast(asyncio.BaseProtocol, ProxyGate(self, app_factory))
        return cast(asyncio.BaseProtocol, self.tls_protocol(app_factory()))

    def tls_protocol(self, app: EdgeApp) -> TlsConnection:
        tls = self.tls
        assert tls is not None
        return TlsConnection(
            self.loop, cast(TlsApp, app), tls.default, self.counters, self.handshake_timeout
        )

    def trusts(self, ip: str) -> bool:
        trusted = self.trusted
        if trusted is None:
            return False
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return False
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        return any(addr in net for net in trusted)


class ProxyGate(asyncio.Protocol):
    """Reads the PROXY header of one connection, then hands the transport over."""

    __slots__ = ("app_factory", "buf", "done", "edge", "timer", "transport")

    def __init__(self, edge: Edge, app_factory: Callable[[], EdgeApp]) -> None:
        self.edge = edge
        self.app_factory = app_factory
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.timer: asyncio.TimerHandle | None = None
        self.done = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = t = cast(asyncio.Transport, transport)
        peer = t.get_extra_info("peername")
        if not peer or not self.edge.trusts(str(peer[0])):
            self._refuse("untrusted")
            return
        self.timer = self.edge.loop.call_later(self.edge.proxy_timeout, self._refuse, "timeout")

    def data_received(self, data: bytes) -> None:
        if self.done:
            return
        self.buf += data
        try:
            header = parse(self.buf)
        except ProxyProtocolError as exc:
            self._refuse(exc.reason)
            return
        if header is None:
            return
        self.done = True
        if self.timer is not None:
            self.timer.cancel()
        rest = self.buf[header.length :]
        self.buf = b""
        t = self.transport
        assert t is not None
        app = self.app_factory()
        if header.source is not None:
            app.proxied_by(header.source, header.destination)
        edge = self.edge
        if edge.tls is None:
            t.set_protocol(cast(asyncio.BaseProtocol, app))
            app.connection_made(t)
            if rest and not t.is_closing():
                app.data_received(rest)
            return
        proto = edge.tls_protocol(app)
        t.set_protocol(cast(asyncio.BaseProtocol, proto))
        proto.connection_made(t)
        if rest:  # the start of the handshake came with the header
            proto.data_received(rest)

    def eof_received(self) -> bool:
        if not self.done:
            self._refuse("missing")
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _refuse(self, reason: str) -> None:
        if self.done:
            return
        self.done = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.edge.counters.proxy_rejected[reason] += 1
        if self.transport is not None:
            self.transport.abort()


# -- the backend side ---------------------------------------------------------------------


def proxy_header_for(
    version: str,
    proxied: tuple[Address, Address | None] | None,
    transport: asyncio.BaseTransport,
) -> bytes:
    """The PROXY header a ``send_proxy`` pool's backend gets for a client connection: the
    addresses a PROXY header gave us (``proxied``), else the connection's own."""
    if proxied is not None:
        source, destination = proxied
    else:
        source, destination = transport.get_extra_info("peername")[:2], None
    if destination is None:
        destination = transport.get_extra_info("sockname")[:2]
    return build(version, source, destination)


class UpstreamTls:
    """A pool's TLS to its backends: the context and the name to send and verify."""

    __slots__ = ("context", "server_name")

    def __init__(self, config: PoolConfig) -> None:
        self.context = client_context(
            ca=config.tls_ca, verify=config.tls_verify, cert=config.tls_cert, key=config.tls_key
        )
        self.server_name = config.tls_server_name


P = TypeVar("P", bound=asyncio.BaseProtocol)


class _TlsStart(asyncio.Protocol):
    """The protocol under ``loop.start_tls`` until the caller's own takes the TLS transport.

    The caller's protocol cannot be given to ``start_tls`` itself: a failed handshake calls
    ``connection_lost`` on it without a ``connection_made`` first (a relay would then close
    its client while the next backend is still to be tried). This one ignores that, and keeps
    any bytes or EOF that come before the hand-over (uvloop delivers none: it schedules the
    first read after waking the caller; kept for loops that do not)."""

    __slots__ = ("data", "eof")

    def __init__(self) -> None:
        self.data: list[bytes] = []
        self.eof = False

    def data_received(self, data: bytes) -> None:
        self.data.append(data)

    def eof_received(self) -> bool:
        self.eof = True
        return True  # keep the transport open: the caller's protocol decides

    def hand_over(self, transport: asyncio.Transport, protocol: asyncio.BaseProtocol) -> None:
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        app = cast(asyncio.Protocol, protocol)
        for data in self.data:
            app.data_received(data)
        if self.eof and not app.eof_received():
            transport.close()


async def open_upstream(
    loop: asyncio.AbstractEventLoop,
    factory: Callable[[], P],
    backend: Backend,
    tls: UpstreamTls | None,
    preamble: bytes | None = None,
) -> tuple[asyncio.Transport, P]:
    """Connect to ``backend``, over TLS when its pool says so (the caller's timeout applies).

    ``preamble`` (a ``send_proxy`` pool's PROXY header) is the first thing on the wire: in
    plain TCP it is written right after the connect; with TLS it goes in clear before the
    handshake (HAProxy's ``ssl send-proxy-v2``), which then starts on the same connection
    (``loop.start_tls``), and the caller's protocol gets the TLS transport once it is done.
    A failed handshake raises ``ssl.SSLError`` (an ``OSError``), as a TLS connect does."""
    if tls is None:
        transport, proto = await loop.create_connection(factory, backend.host, backend.port)
        if preamble is not None:
            transport.write(preamble)
        return transport, proto
    server_hostname = tls.server_name or backend.host
    if preamble is None:
        return await loop.create_connection(
            factory, backend.host, backend.port, ssl=tls.context, server_hostname=server_hostname
        )
    start = _TlsStart()
    plain, _ = await loop.create_connection(lambda: start, backend.host, backend.port)
    try:
        plain.write(preamble)
        secure = await loop.start_tls(plain, start, tls.context, server_hostname=server_hostname)
    except BaseException:
        plain.abort()  # (start_tls closed its TLS transport; this is the TCP one under it)
        raise
    assert secure is not None  # (None only for a transport closed under it, which raised)
    proto = factory()
    start.hand_over(secure, proto)
    return secure, proto


def build_upstream_tls(
    pools: Mapping[str, PoolConfig], old: Mapping[str, UpstreamTls]
) -> tuple[dict[str, UpstreamTls], list[tuple[str, Exception]]]:
    """Contexts for every pool with ``tls = true``; a pool whose files went bad keeps its old
    context (the errors are returned for the caller to log)."""
    out: dict[str, UpstreamTls] = {}
    errors: list[tuple[str, Exception]] = []
    for name, cfg in pools.items():
        if not cfg.tls:
            continue
        try:
            out[name] = UpstreamTls(cfg)
        except (OSError, ValueError, ssl.SSLError) as exc:
            errors.append((name, exc))
            if name in old:
                out[name] = old[name]
    return out, errors

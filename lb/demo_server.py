"""A small, fast HTTP/1.1 backend for demos, tests and benchmarks.

Run it as ``python -m lb.demo_server --port 8001 [--name a] [--size 16384] [--latency 5]``.
It prints ``listening on HOST:PORT`` once it accepts connections (``--port 0`` picks a free
port), and exits 0 on SIGTERM or SIGINT.

Endpoints (any method; HEAD gets the headers only):

* ``/`` and any unknown path: 200, a body naming the server (``{"backend":NAME,"port":N}``,
  padded or cut to ``--size`` bytes) and ``X-Backend: NAME``.
* ``/healthz``: 200 ``ok``. Never delayed by ``--latency`` or ``--cpu-us``.
* ``/stats``: the request, body-byte and connection counters as JSON, and the delayed requests
  in flight now and at most (``in_flight``, ``max_in_flight``). Never delayed.
* ``/echo``: streams the request body back (Content-Length when the request had one, else
  chunked).
* ``/headers``: the request line, peer and headers it received, as JSON.
* ``/status/NNN``: answers status NNN.
* ``/stream?bytes=N[&chunked=1]``: N bytes of body, written as the client reads them.
* ``/sleep?ms=N``: answers after N ms (on a timer; the loop keeps serving).
* ``/latency?ms=N``: from now on, delays every application response by N ms, as ``--latency``
  does (``ms=0`` turns it off); answers at once. How a test or benchmark makes a backend slow,
  and fast again, while it serves.
* ``Upgrade`` requests (and ``CONNECT``): 101 (200), then the connection echoes raw bytes.

Theory of operation
-------------------
Each connection is one ``BackendProtocol``. ``data_received`` feeds an httptools parser, and the
parser callbacks answer requests. The common case (``GET /`` without ``--latency`` or
``--cpu-us``) writes a response preformatted at startup: a parse and one ``transport.write``.

Responses leave in request order even when some are slow. A response that cannot be written at
once becomes a ``Reply`` in the connection's queue. Only the head of the queue writes to the
transport; the others keep their output until they reach the head. Reading pauses while a reply
is pending after a complete request, so a client that pipelines without end cannot make us
buffer without end. Reading also pauses while the transport is paused for writing (the client
is not reading its responses), which couples ``pause_writing`` to ``pause_reading`` as uvicorn's
FlowControl does. Request bodies are counted and dropped as they arrive, or streamed back by
``/echo``; they are never buffered whole.

This is a test and benchmark fixture: the load balancer never imports it.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import socket
import sys
import time
import traceback
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import Final, TypeAlias, cast
from urllib.parse import parse_qs

import httptools
import orjson
import uvloop

# How a response ends its connection, chosen per request. Also the index into ``Canned``.
_KEEP_11: Final = 0  # HTTP/1.1 persistent by default: no Connection header needed
_KEEP_10: Final = 1  # an HTTP/1.0 client asked for keep-alive: we must say we agree
_CLOSE: Final = 2  # Connection: close, or HTTP/1.0 without keep-alive, or shutting down
_CONNECTION_LINES: Final = (b"", b"Connection: keep-alive\r\n", b"Connection: close\r\n")
_HEAD_ONLY: Final = 3  # added to the mode index for HEAD requests

# Why reading is paused (a bit set, so either reason keeps it paused).
_WRITE_PAUSED: Final = 1
_BACKLOG: Final = 2

_STREAM_CHUNK: Final = 64 * 1024
_FILL: Final = bytes(range(33, 127)) * (_STREAM_CHUNK // 94 + 1)
_FILL_CHUNK: Final = _FILL[:_STREAM_CHUNK]
_FILL_FRAME: Final = b"%x\r\n%s\r\n" % (_STREAM_CHUNK, _FILL_CHUNK)
_LAST_CHUNK: Final = b"0\r\n\r\n"
_CONTINUE: Final = b"HTTP/1.1 100 Continue\r\n\r\n"
_WRITE_HIGH_WATER: Final = 256 * 1024

Header: TypeAlias = tuple[bytes, bytes]
Canned: TypeAlias = tuple[bytes, ...]
"""One response preformatted six ways: index ``mode + (_HEAD_ONLY if HEAD else 0)``."""


def _reason(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode("ascii")
    except ValueError:
        return b"Unknown"


def _has_body(status: int) -> bool:
    return not (100 <= status < 200 or status in (204, 304))


def render_head(status: int, headers: Iterable[Header], mode: int) -> bytes:
    """Format a response head; ``mode`` picks the Connection header."""
    parts = [b"HTTP/1.1 %d %s\r\n" % (status, _reason(status))]
    parts.extend(b"%s: %s\r\n" % header for header in headers)
    parts.append(_CONNECTION_LINES[mode])
    parts.append(b"\r\n")
    return b"".join(parts)


def render(
    status: int, headers: Sequence[Header], body: bytes, mode: int, head_only: bool
) -> bytes:
    """Format a whole response with a Content-Length (none for 1xx, 204 and 304)."""
    if _has_body(status):
        head = render_head(status, [*headers, (b"Content-Length", b"%d" % len(body))], mode)
        return head if head_only else head + body
    return render_head(status, headers, mode)


def canned(status: int, headers: Sequence[Header], body: bytes) -> Canned:
    """Preformat a response for every connection mode, with and without a body."""
    return tuple(
        render(status, headers, body, mode, head_only)
        for head_only in (False, True)
        for mode in (_KEEP_11, _KEEP_10, _CLOSE)
    )


def identity_body(name: str, port: int, size: int | None) -> bytes:
    """The identity line, padded (ending in a newline) or cut to exactly ``size`` bytes."""
    line = orjson.dumps({"backend": name, "port": port}) + b"\n"
    if size is None or size == len(line):
        return line
    if size < len(line):
        return line[:size]
    pad = size - len(line) - 1
    return line + (_FILL * (pad // len(_FILL) + 1))[:pad] + b"\n"


def _burn_cpu(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


@dataclass(frozen=True, slots=True)
class Options:
    host: str = "127.0.0.1"
    port: int = 0
    name: str | None = None
    size: int | None = None
    latency_ms: float = 0.0
    cpu_us: float = 0.0
    grace_s: float = 2.0
    backlog: int = 2048


class App:
    """Server-wide state: preformatted responses, counters and the live connections."""

    __slots__ = (
        "all_closed",
        "bad_request",
        "body_bytes",
        "closing",
        "connections",
        "connections_total",
        "cpu_s",
        "fast",
        "health",
        "identity",
        "in_flight",
        "latency_s",
        "max_in_flight",
        "name",
        "name_header",
        "port",
        "requests",
    )

    def __init__(self, options: Options, port: int) -> None:
        self.name = options.name if options.name is not None else f"{options.host}:{port}"
        self.port = port
        self.name_header: Header = (b"X-Backend", self.name.encode("latin-1"))
        body = identity_body(self.name, port, options.size)
        is_json = body.endswith(b"}\n") and body.startswith(b"{")
        content_type = b"application/json" if is_json and len(body) < 512 else b"text/plain"
        self.identity = canned(200, [(b"Content-Type", content_type), self.name_header], body)
        self.health = canned(200, [(b"Content-Type", b"text/plain"), self.name_header], b"ok")
        self.bad_request = render(
            400, [(b"Content-Type", b"text/plain")], b"bad request\n", _CLOSE, False
        )
        self.latency_s = options.latency_ms / 1000.0
        self.cpu_s = options.cpu_us / 1_000_000.0
        self.fast = self.latency_s <= 0 and self.cpu_s <= 0
        self.requests = 0
        # Delayed requests (--latency, /sleep) being served now, and the most at once: what a
        # concurrency limit in front of this server must keep down.
        self.in_flight = 0
        self.max_in_flight = 0
        self.body_bytes = 0
        self.connections_total = 0
        self.connections: set[BackendProtocol] = set()
        self.closing = False
        self.all_closed = asyncio.Event()

    def stats(self) -> bytes:
        return orjson.dumps(
            {
                "backend": self.name,
                "port": self.port,
                "requests": self.requests,
                "in_flight": self.in_flight,
                "max_in_flight": self.max_in_flight,
                "body_bytes": self.body_bytes,
                "connections": len(self.connections),
                "connections_total": self.connections_total,
            },
            option=orjson.OPT_APPEND_NEWLINE,
        )

    def set_latency(self, ms: int) -> None:
        """``/latency?ms=N``: the delay of every application response from now on."""
        self.latency_s = ms / 1000.0
        self.fast = self.latency_s <= 0 and self.cpu_s <= 0

    def delayed_started(self) -> None:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def delayed_ended(self) -> None:
        self.in_flight -= 1

    def forget(self, conn: BackendProtocol) -> None:
        self.connections.discard(conn)
        if self.closing and not self.connections:
            self.all_closed.set()

    async def shutdown(self, grace_s: float) -> None:
        """Close idle connections now, busy ones after their reply, and abort stragglers."""
        self.closing = True
        for conn in list(self.connections):
            conn.shutdown()
        if not self.connections:
            return
        try:
            async with asyncio.timeout(grace_s):
                await self.all_closed.wait()
        except TimeoutError:
            for conn in list(self.connections):
                conn.abort()
            await asyncio.sleep(0)  # let connection_lost run


class Reply:
    """One response in a connection's in-order queue; writes only when at the head."""

    __slots__ = ("active", "close_after", "done", "pending", "proto")

    def __init__(self, proto: BackendProtocol, data: bytes = b"", *, done: bool = False) -> None:
        self.proto = proto
        self.pending: list[bytes] = [data] if data else []
        self.active = False
        self.done = done
        self.close_after = False

    def write(self, data: bytes) -> None:
        if self.active:
            self.proto.send(data)
        else:
            self.pending.append(data)

    def finish(self) -> None:
        self.done = True
        if self.active:
            self.proto.advance()

    def start(self) -> None:
        """Called once, when this reply reaches the head of the queue."""
        self.active = True
        if self.pending:
            self.proto.send_many(self.pending)
            self.pending = []

    def resume(self) -> None:
        """The transport is writable again."""

    def cancel(self) -> None:
        """The connection is gone."""


class DelayedReply(Reply):
    """A complete response written after ``delay`` seconds (``--latency``, ``/sleep``)."""

    __slots__ = ("data", "handle", "waiting")

    def __init__(self, proto: BackendProtocol, data: bytes, delay: float) -> None:
        super().__init__(proto)
        self.data = data
        self.handle = asyncio.get_running_loop().call_later(delay, self._fire)
        self.waiting = True
        proto._app.delayed_started()

    def _fire(self) -> None:
        self.waiting = False
        self.proto._app.delayed_ended()
        self.write(self.data)
        self.finish()

    def cancel(self) -> None:
        self.handle.cancel()
        if self.waiting:
            self.waiting = False
            self.proto._app.delayed_ended()


class StreamReply(Reply):
    """``remaining`` bytes of body, written only while the transport is not paused."""

    __slots__ = ("chunked", "remaining")

    def __init__(self, proto: BackendProtocol, head: bytes, remaining: int, chunked: bool) -> None:
        super().__init__(proto, head)
        self.remaining = remaining
        self.chunked = chunked

    def start(self) -> None:
        super().start()
        self.resume()

    def resume(self) -> None:
        proto = self.proto
        while self.remaining > 0:
            if proto.write_paused or proto.closed:
                return
            n = min(self.remaining, _STREAM_CHUNK)
            self.remaining -= n
            if n == _STREAM_CHUNK:
                proto.send(_FILL_FRAME if self.chunked else _FILL_CHUNK)
            elif self.chunked:
                proto.send(b"%x\r\n%s\r\n" % (n, _FILL_CHUNK[:n]))
            else:
                proto.send(_FILL_CHUNK[:n])
        if not self.done:
            if self.chunked:
                proto.send(_LAST_CHUNK)
            self.finish()


class EchoReply(Reply):
    """Streams the request body back as it arrives."""

    __slots__ = ("chunked", "head_only")

    def __init__(self, proto: BackendProtocol, head: bytes, chunked: bool, head_only: bool) -> None:
        super().__init__(proto, head)
        self.chunked = chunked
        self.head_only = head_only

    def body(self, data: bytes) -> None:
        if self.head_only:
            return
        if self.chunked:
            self.write(b"%x\r\n%s\r\n" % (len(data), data))
        else:
            self.write(data)

    def end(self) -> None:
        if self.chunked and not self.head_only:
            self.write(_LAST_CHUNK)
        self.finish()


class BackendProtocol(asyncio.Protocol):
    """One client connection: httptools callbacks in, preformatted or queued replies out."""

    __slots__ = (
        "_app",
        "_close_when_idle",
        "_echo",
        "_expect_continue",
        "_headers",
        "_in_message",
        "_index",
        "_mode",
        "_parser",
        "_queue",
        "_read_blocks",
        "_transport",
        "_tunnel",
        "_upgrade",
        "_url",
        "advancing",
        "closed",
        "ignore",
        "write_paused",
    )

    _transport: asyncio.Transport  # set by connection_made, before any other callback

    def __init__(self, app: App) -> None:
        self._app = app
        self._parser = httptools.HttpRequestParser(self)
        self._queue: deque[Reply] = deque()
        self._url = b""
        self._headers: list[Header] = []
        self._mode = _KEEP_11
        self._index = 0
        self._expect_continue = False
        self._upgrade = False
        self._in_message = False
        self._echo: EchoReply | None = None
        self._tunnel: Reply | None = None
        self._read_blocks = 0
        self._close_when_idle = False
        self.advancing = False
        self.closed = False
        self.ignore = False  # after a closing request: parse nothing more
        self.write_paused = False

    # -- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's class does not subclass it
        self._transport = transport
        transport.set_write_buffer_limits(high=_WRITE_HIGH_WATER)
        app = self._app
        app.connections.add(self)
        app.connections_total += 1
        if app.closing:
            self.shutdown()

    def data_received(self, data: bytes) -> None:
        if self.ignore:
            if self._tunnel is not None:
                self._tunnel.write(data)
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            self._start_tunnel(data[exc.args[0] :])
        except httptools.HttpParserCallbackError:
            traceback.print_exc(file=sys.stderr)
            self._fail(500)
        except httptools.HttpParserError:
            self._fail(400)

    def eof_received(self) -> bool:
        if self._tunnel is not None:
            self._tunnel.close_after = True
            self._tunnel.finish()
            return True
        self.ignore = True
        if self._queue:  # answer what was asked, then close
            self._queue[-1].close_after = True
            return True
        return False

    def pause_writing(self) -> None:
        self.write_paused = True
        self._block_reading(_WRITE_PAUSED)

    def resume_writing(self) -> None:
        self.write_paused = False
        self._unblock_reading(_WRITE_PAUSED)
        if self._queue:
            self._queue[0].resume()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.ignore = True
        for reply in self._queue:
            reply.cancel()
        self._queue.clear()
        self._echo = self._tunnel = None
        self._app.forget(self)

    # -- httptools callbacks ------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._in_message = True
        self._url = b""
        self._headers = []
        self._expect_continue = False

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))
        if len(name) == 6 and name.lower() == b"expect":
            self._expect_continue = value.lower() == b"100-continue"

    def on_headers_complete(self) -> None:
        if self.ignore:
            return
        parser = self._parser
        if not parser.should_keep_alive() or self._close_when_idle:
            mode = _CLOSE
        elif parser.get_http_version() == "1.0":
            mode = _KEEP_10
        else:
            mode = _KEEP_11
        self._mode = mode
        self._index = mode + _HEAD_ONLY if parser.get_method() == b"HEAD" else mode
        self._upgrade = parser.should_upgrade()
        if self._expect_continue and not self._upgrade:
            self._emit(_CONTINUE)
        url = self._url
        if url == b"/echo" or url.startswith(b"/echo?"):
            self._start_echo()

    def on_body(self, body: bytes) -> None:
        self._app.body_bytes += len(body)
        if self._echo is not None:
            self._echo.body(body)

    def on_message_complete(self) -> None:
        self._in_message = False
        if self.ignore or self._upgrade:
            return  # an upgrade is answered when the parser raises HttpParserUpgrade
        app = self._app
        app.requests += 1
        if self._url == b"/" and app.fast:
            if self._queue:
                self._queue.append(Reply(self, app.identity[self._index], done=True))
            else:
                self._transport.write(app.identity[self._index])
        else:
            self._route()
        if self._mode == _CLOSE or self._close_when_idle:
            self._end_after_replies()
        elif self._queue:
            self._block_reading(_BACKLOG)

    # -- routing (everything but the fast path) -----------------------------------------------

    def _route(self) -> None:
        app = self._app
        if self._echo is not None:
            self._echo.end()
            self._echo = None
            return
        path, _, query = self._url.partition(b"?")
        index = self._index
        mode = self._mode
        head_only = index >= _HEAD_ONLY
        if path == b"/healthz":
            self._emit(app.health[index])
        elif path == b"/stats":
            self._emit(render(200, self._json_headers(), app.stats(), mode, head_only))
        elif path == b"/headers":
            self._answer(render(200, self._json_headers(), self._describe(), mode, head_only))
        elif path.startswith(b"/status/"):
            status = _int_or_none(path[8:])
            if status is None or not 200 <= status <= 999:
                self._answer(self._client_error(b"status must be 200..999\n"))
            else:
                body = b"%d %s\n" % (status, _reason(status))
                headers = [(b"Content-Type", b"text/plain"), app.name_header]
                self._answer(render(status, headers, body, mode, head_only))
        elif path == b"/stream":
            self._stream(query, mode, head_only)
        elif path == b"/latency":
            ms = _int_or_none(parse_qs(query.decode("latin-1")).get("ms", [""])[0].encode())
            if ms is None or ms < 0:
                self._emit(self._client_error(b"ms must be an integer >= 0\n"))
                return
            app.set_latency(ms)
            headers = [(b"Content-Type", b"text/plain"), app.name_header]
            self._emit(render(200, headers, b"latency %d ms\n" % ms, mode, head_only))
        elif path == b"/sleep":
            params = parse_qs(query.decode("latin-1"))
            ms = _int_or_none(params.get("ms", ["0"])[0].encode())
            if ms is None or ms < 0:
                self._answer(self._client_error(b"ms must be an integer >= 0\n"))
                return
            headers = [(b"Content-Type", b"text/plain"), app.name_header]
            data = render(200, headers, b"slept %d ms\n" % ms, mode, head_only)
            self._enqueue(DelayedReply(self, data, ms / 1000.0))
        else:
            self._answer(app.identity[index])

    def _answer(self, data: bytes) -> None:
        """Send a complete application response, after ``--cpu-us`` and ``--latency``."""
        app = self._app
        if app.cpu_s > 0:
            _burn_cpu(app.cpu_s)
        if app.latency_s > 0:
            self._enqueue(DelayedReply(self, data, app.latency_s))
        else:
            self._emit(data)

    def _client_error(self, message: bytes) -> bytes:
        headers = [(b"Content-Type", b"text/plain"), self._app.name_header]
        return render(400, headers, message, self._mode, self._index >= _HEAD_ONLY)

    def _json_headers(self) -> list[Header]:
        return [(b"Content-Type", b"application/json"), self._app.name_header]

    def _describe(self) -> bytes:
        merged: dict[str, str] = {}
        for raw_name, raw_value in self._headers:
            name = raw_name.decode("latin-1").lower()
            value = raw_value.decode("latin-1")
            merged[name] = f"{merged[name]}, {value}" if name in merged else value
        peer = self._transport.get_extra_info("peername")
        return orjson.dumps(
            {
                "backend": self._app.name,
                "method": self._parser.get_method().decode("latin-1"),
                "url": self._url.decode("latin-1"),
                "version": self._parser.get_http_version(),
                "peer": list(peer[:2]) if peer else None,
                "headers": merged,
                "raw": [[n.decode("latin-1"), v.decode("latin-1")] for n, v in self._headers],
            },
            option=orjson.OPT_APPEND_NEWLINE,
        )

    def _stream(self, query: bytes, mode: int, head_only: bool) -> None:
        params = parse_qs(query.decode("latin-1"))
        size = _int_or_none(params.get("bytes", ["0"])[0].encode())
        if size is None or size < 0:
            self._answer(self._client_error(b"bytes must be an integer >= 0\n"))
            return
        wants_chunked = params.get("chunked", ["0"])[0] in ("1", "true", "yes")
        chunked = wants_chunked and self._parser.get_http_version() != "1.0"
        headers = [(b"Content-Type", b"application/octet-stream"), self._app.name_header]
        if chunked:
            headers.append((b"Transfer-Encoding", b"chunked"))
        else:
            headers.append((b"Content-Length", b"%d" % size))
        head = render_head(200, headers, mode)
        if head_only:
            self._emit(head)
        else:
            self._enqueue(StreamReply(self, head, size, chunked))

    def _start_echo(self) -> None:
        content_length = None
        chunked_request = False
        for name, value in self._headers:
            lowered = name.lower()
            if lowered == b"content-length":
                content_length = int(value)  # llhttp already rejected bad or conflicting values
            elif lowered == b"transfer-encoding":
                chunked_request = True
        headers = [(b"Content-Type", b"application/octet-stream"), self._app.name_header]
        chunked = content_length is None and chunked_request and self._mode != _KEEP_10
        if chunked:
            headers.append((b"Transfer-Encoding", b"chunked"))
        else:
            headers.append((b"Content-Length", b"%d" % (content_length or 0)))
        head_only = self._index >= _HEAD_ONLY
        reply = EchoReply(self, render_head(200, headers, self._mode), chunked, head_only)
        self._echo = reply
        self._enqueue(reply)

    def _start_tunnel(self, rest: bytes) -> None:
        """After an Upgrade (101) or CONNECT (200): echo raw bytes until EOF."""
        if self.ignore:
            return
        upgrade = b""
        for name, value in self._headers:
            if name.lower() == b"upgrade":
                upgrade = value
        if self._parser.get_method() == b"CONNECT":
            head = render_head(200, [self._app.name_header], _KEEP_11)
        else:
            headers = [(b"Connection", b"Upgrade"), (b"Upgrade", upgrade), self._app.name_header]
            head = render_head(101, headers, _KEEP_11)
        self.ignore = True
        tunnel = Reply(self, head)
        self._tunnel = tunnel
        self._enqueue(tunnel)
        self._unblock_reading(_BACKLOG)
        if rest:
            tunnel.write(rest)

    def _fail(self, status: int) -> None:
        if self.ignore:
            return
        if status == 400:
            data = self._app.bad_request
        else:
            data = render(status, [(b"Content-Type", b"text/plain")], b"error\n", _CLOSE, False)
        self._emit(data)
        self._end_after_replies()

    # -- the reply queue ----------------------------------------------------------------------

    def send(self, data: bytes) -> None:
        if not self.closed:
            self._transport.write(data)

    def send_many(self, data: list[bytes]) -> None:
        if not self.closed:
            self._transport.writelines(data)

    def _emit(self, data: bytes) -> None:
        """Send a complete response now, or queue it behind the pending ones."""
        if self._queue:
            self._queue.append(Reply(self, data, done=True))
        else:
            self.send(data)

    def _enqueue(self, reply: Reply) -> None:
        self._queue.append(reply)
        if len(self._queue) == 1:
            self.advance()

    def advance(self) -> None:
        """Start the head reply; drop finished ones; close or resume reading when empty."""
        if self.advancing:
            return  # a reply finished while starting: the loop below sees it
        self.advancing = True
        queue = self._queue
        try:
            while queue:
                head = queue[0]
                if not head.active:
                    head.start()
                if not head.done:
                    return
                queue.popleft()
                if head.close_after:
                    self._close()
                    return
        finally:
            self.advancing = False
        self._unblock_reading(_BACKLOG)
        if self._close_when_idle and not self._in_message:
            self._close()

    def _end_after_replies(self) -> None:
        self.ignore = True
        if self._queue:
            self._queue[-1].close_after = True
        else:
            self._close()

    def _block_reading(self, reason: int) -> None:
        if not self._read_blocks and not self.closed:
            self._transport.pause_reading()
        self._read_blocks |= reason

    def _unblock_reading(self, reason: int) -> None:
        if self._read_blocks & reason:
            self._read_blocks &= ~reason
            if not self._read_blocks and not self.closed:
                self._transport.resume_reading()

    def _close(self) -> None:
        if not self.closed:
            self.closed = True
            self.ignore = True
            self._transport.close()

    # -- shutdown -----------------------------------------------------------------------------

    def shutdown(self) -> None:
        """Close now if idle, else after the replies in flight (sent with Connection: close)."""
        self._close_when_idle = True
        if not self._queue and not self._in_message:
            self._close()

    def abort(self) -> None:
        self.closed = True
        self._transport.abort()


def _int_or_none(text: bytes) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None


def _bind(host: str, port: int, backlog: int) -> socket.socket:
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(backlog)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


async def serve(options: Options) -> int:
    """Serve until SIGTERM or SIGINT, then shut down gracefully. Returns the exit status."""
    loop = asyncio.get_running_loop()
    sock = _bind(options.host, options.port, options.backlog)
    host, port = sock.getsockname()[:2]
    app = App(options, port)
    server = await loop.create_server(
        lambda: BackendProtocol(app), sock=sock, backlog=options.backlog
    )
    stop = asyncio.Event()
    signals = (signal.SIGTERM, signal.SIGINT)
    for signum in signals:
        loop.add_signal_handler(signum, stop.set)
    shown = f"[{host}]" if ":" in host else host
    print(f"listening on {shown}:{port}", flush=True)
    try:
        await stop.wait()
    finally:
        for signum in signals:
            loop.remove_signal_handler(signum)
        server.close()
        await app.shutdown(options.grace_s)
    return 0


def _header_safe(text: str) -> str:
    if not text or not all(33 <= ord(c) < 127 for c in text):
        raise argparse.ArgumentTypeError("must be visible ASCII without spaces")
    return text


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be >= 0")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError("must be >= 0")
    return value


def parse_args(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m lb.demo_server", description="A small, fast HTTP/1.1 demo backend."
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=_non_negative_int, default=0, help="0 picks a free port")
    parser.add_argument("--name", type=_header_safe, help="identity (default HOST:PORT)")
    parser.add_argument("--size", type=_non_negative_int, help="body size of GET / in bytes")
    parser.add_argument(
        "--latency", type=_non_negative_float, default=0.0, metavar="MS", help="delay per request"
    )
    parser.add_argument(
        "--cpu-us", type=_non_negative_float, default=0.0, help="CPU to burn per request"
    )
    parser.add_argument(
        "--grace", type=_non_negative_float, default=2.0, metavar="S", help="shutdown grace"
    )
    parser.add_argument("--backlog", type=_non_negative_int, default=2048, help="listen backlog")
    ns = parser.parse_args(argv)
    return Options(
        host=ns.host,
        port=ns.port,
        name=ns.name,
        size=ns.size,
        latency_ms=ns.latency,
        cpu_us=ns.cpu_us,
        grace_s=ns.grace,
        backlog=ns.backlog,
    )


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    return uvloop.run(serve(options))


if __name__ == "__main__":
    sys.exit(main())

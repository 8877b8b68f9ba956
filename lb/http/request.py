"""Client side of the L7 proxy: bytes from the client in, request events out.

Theory of operation
-------------------
:class:`RequestParser` is fed whatever the client transport delivers and calls its handler:

* ``on_request_head(head)`` once per request, with a validated :class:`RequestHead`;
* ``on_request_body(data)`` zero or more times with *raw* body bytes, exactly as they must be
  forwarded upstream (for chunked requests the chunk framing is included: the upstream head keeps
  ``Transfer-Encoding: chunked``, so nothing is re-encoded);
* ``on_request_end()`` when the request is complete. **The parser is then paused**: bytes that
  arrive after the request (pipelined requests) are stashed, not parsed, until the proxy calls
  :meth:`RequestParser.resume` once the response has been sent. So requests never overlap, and a
  pipelined request is parsed only when the connection is ready for it.
* ``on_request_error(status, reason)`` when the input is invalid or exceeds a limit. The parser is
  then dead: the proxy must send ``error_response(status, reason)`` (if no response is in flight)
  and close the connection. Nothing after a framing error can be trusted.

Events always come out in byte order. Callbacks may call ``resume()``/``close()``; feeding the
parser from inside a callback is allowed but pointless.

Why callbacks and not a list of event objects: this is the per-request hot path. A handler object
with four bound methods (looked up once) costs one call per event and allocates nothing, where an
event list costs an object per event plus a list, and a dispatch loop in the adapter.

Limits are counted on the raw bytes, because httptools has none: the request line (414), the
header section (431), the number of header fields (431), and optionally the body (413; checked
against Content-Length before anything is forwarded, and while a chunked body streams).

What is rejected with 400 (HAProxy rejects most of these too; we are stricter where noted):
anything llhttp rejects in strict mode (bad method/target/version syntax, invalid token or value
characters, obs-fold, bare CR or LF, whitespace before a colon, duplicate Content-Length *even when
identical* - HAProxy merges identical ones, llhttp cannot - Content-Length with
Transfer-Encoding, Transfer-Encoding whose last coding is not chunked); more than one space in
the request line; a fragment in the target; a target in authority-form or a bad absolute-form;
Transfer-Encoding in an HTTP/1.0 request; a missing (HTTP/1.1) or duplicate Host, or one with
characters outside the authority grammar; an upgrade request with a body (the body would
otherwise be parsed as the next request if the backend declines the upgrade). CONNECT gets 501,
versions other than 1.0/1.1 get 505.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import httptools

from lb.http._fast import SCAN_REQUEST
from lb.http.chunked import ChunkedFramer, FramingError
from lb.http.framing import (
    BODY,
    DEAD,
    HEAD,
    MessageParser,
    content_length,
    cut_connection_options,
    ignore,
    keep_alive_option,
)
from lb.http.heads import RequestHead, new_request_head, raw_values, split_tokens


class RequestHandler(Protocol):
    """What the client-side adapter implements."""

    def on_request_head(self, head: RequestHead) -> None: ...

    def on_request_body(self, data: bytes) -> None: ...

    def on_request_end(self) -> None: ...

    def on_request_error(self, status: int, reason: str) -> None: ...


class DirectHandler:
    """A :class:`RequestHandler` base class whose head and end callbacks the parser calls as
    methods, where a handler of any other class has them bound (two method objects per
    connection). Where this module is compiled they are C calls through the class's method
    table; the client connection (``ClientSide`` in lb/proxy/exchange.py) derives from it."""

    __slots__ = ()

    def on_request_head(self, head: RequestHead) -> None:
        raise NotImplementedError

    def on_request_end(self) -> None:
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class RequestLimits:
    """Per-request limits; defaults follow common proxy practice (HAProxy, nginx)."""

    max_request_line: int = 8192
    max_header_bytes: int = 32768
    max_headers: int = 100
    max_body_bytes: int | None = None


DEFAULT_LIMITS = RequestLimits()

_HOST = 1
_CL = 2
_TE = 3
_UPGRADE = 4
_EXPECT = 5
_XRID = 6
# Codes from here on name headers that never go upstream as received.
_CUT_FROM = 7
_CONN = 7
_XFF = 8
_HOP = 9
_XFWD = 10

_CODES: dict[bytes, int] = {
    b"host": _HOST,
    b"content-length": _CL,
    b"transfer-encoding": _TE,
    b"upgrade": _UPGRADE,
    b"expect": _EXPECT,
    b"connection": _CONN,
    b"x-forwarded-for": _XFF,
    b"x-request-id": _XRID,
    b"keep-alive": _HOP,
    b"proxy-connection": _HOP,
    b"te": _HOP,
    b"trailer": _HOP,
    b"x-forwarded-proto": _XFWD,
    b"x-forwarded-host": _XFWD,
}

# One pass over the lowercased, llhttp-validated head finds every header the proxy cares about
# (about 0.7 us for a browser-sized head, half the cost of an ``on_header`` callback per field).
_SPECIAL = re.compile(
    rb"\r\n("
    + b"|".join(re.escape(name) for name in sorted(_CODES, key=len, reverse=True))
    + rb"):[ \t]*([^\r]*)"
)

#: Connection tokens that never make us drop a header: keywords, and the headers the proxy owns.
_NOT_HOP_BY_HOP = frozenset(
    {
        b"close",
        b"keep-alive",
        b"upgrade",
        b"host",
        b"content-length",
        b"transfer-encoding",
        b"x-forwarded-for",
        b"x-forwarded-proto",
        b"x-forwarded-host",
        b"x-request-id",
    }
)

# The common request line: a method, an origin-form target (captured whole and up to the query),
# HTTP/1.x. llhttp has already validated the characters; anything else goes the slow way.
_REQUEST_LINE = re.compile(rb"([A-Z]+) ((/[^ ?#]*)(?:\?[^ #]*)?) HTTP/1\.([01])\r\n")

# reg-name / IPv4 / IP-literal and an optional port (RFC 3986 section 3.2.2); no userinfo.
_HOST_CHARS = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~!$&'()*+,;=:[]%"
_MAX_REQUEST_ID = 200

#: After HEAD, BODY and DEAD (lb.http.framing): a request is complete, the next waits.
_PAUSED = 3

#: The compiled scan of common heads (:mod:`lb.http._speedups`), or ``None``; tests swap it.
_SCAN = SCAN_REQUEST
#: llhttp's request parser class (read once: a module attribute read costs per connection).
_LL_REQUEST = httptools.HttpRequestParser
#: llhttp's words for a request after one that closes the connection. Said by the parser
#: itself, since the llhttp parser that saw that request may not be the one that sees this one.
AFTER_CLOSE = "Data after `Connection: close`"


class RequestParser(MessageParser):
    """Parses the requests of one client connection; see the module docstring. The stepping
    through heads and bodies is :class:`lb.http.framing.MessageParser`'s."""

    __slots__ = (
        "_direct",
        "_eof",
        "_handler",
        "_head",
        "_last_closes",
        "_max_body",
        "_max_body_or_none",
        "_max_header_bytes",
        "_max_headers",
        "_max_line",
        "_on_end",
        "_on_head",
        "_running",
        "_stash",
        "requests",
    )

    def __init__(self, handler: RequestHandler, limits: RequestLimits = DEFAULT_LIMITS) -> None:
        self._begin(handler)
        self.set_limits(limits)

    @staticmethod
    def template(limits: RequestLimits) -> RequestParser:
        """A parser that only holds ``limits``, to :meth:`spawn` the parsers of new connections
        from (a listener's context keeps one per reload): it parses nothing itself."""
        parser = RequestParser.__new__(RequestParser)
        parser.set_limits(limits)
        parser._state = DEAD
        return parser

    def spawn(self, handler: RequestHandler) -> RequestParser:
        """``RequestParser(handler, limits)`` with this parser's limits, copied rather than
        read from the ``RequestLimits`` again (where compiled, five C fields instead of five
        Python attribute reads, and no Python call of ``__init__``: this runs per
        connection)."""
        parser = RequestParser.__new__(RequestParser)
        parser._begin(handler)
        parser._max_line = self._max_line
        parser._max_header_bytes = self._max_header_bytes
        parser._max_headers = self._max_headers
        parser._max_body = self._max_body
        parser._max_body_or_none = self._max_body_or_none
        return parser

    def _begin(self, handler: RequestHandler) -> None:
        """What ``__init__`` does but for the limits."""
        # (MessageParser.__init__, as a C call where compiled: this runs per connection.) The
        # handler's body and error callbacks are looked up when first needed: most requests
        # have no body and no error, and a bound method is an object to make.
        self._setup(_LL_REQUEST, ignore, HEAD)
        self._handler: RequestHandler | None = handler
        # A DirectHandler's callbacks are called as its methods; another handler's are bound.
        self._direct: DirectHandler | None
        self._on_head: Callable[[RequestHead], None]
        self._on_end: Callable[[], None]
        if isinstance(handler, DirectHandler):
            self._direct = handler
            self._on_head = self._on_end = ignore
        else:
            self._direct = None
            self._on_head = handler.on_request_head
            self._on_end = handler.on_request_end
        # The last request did not let the connection stay open (Connection: close, or
        # HTTP/1.0 without keep-alive): any further request is an error, in llhttp's words.
        # The rule is ours, not llhttp's closed state: the heads the compiled scan takes never
        # reach llhttp, llhttp forgets it whenever it is replaced after a body, and llhttp also
        # takes Proxy-Connection for Connection, which we do not (a parser that saw one is
        # replaced).
        self._last_closes = False
        self._stash: list[bytes] = []
        self._head: RequestHead | None = None
        self._running = False
        self._eof = False
        #: Requests completed on this connection (for keep-alive request limits).
        self.requests = 0

    # -- state the adapter reads ---------------------------------------------------------------

    @property
    def paused(self) -> bool:
        """A request is complete and the parser waits for :meth:`resume`."""
        return self._state == _PAUSED

    @property
    def closed(self) -> bool:
        """After an error, :meth:`close` or :meth:`detach`: the parser takes no more input."""
        return self._state == DEAD

    @property
    def pending_bytes(self) -> int:
        """Bytes stashed while paused: pause reading the client when this grows too large."""
        return sum(map(len, self._stash))

    @property
    def in_message(self) -> bool:
        """Part of a request has been received but it is not complete (408 on timeout)."""
        return (self._state == HEAD and bool(self._buf)) or self._state == BODY

    @property
    def head(self) -> RequestHead | None:
        """The current (or last) request head."""
        return self._head

    # -- input ---------------------------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        """Parse bytes from the client; events are delivered before this returns."""
        if not data:
            return
        state = self._state
        if state == _PAUSED or self._running:
            self._stash.append(data)
        elif state == HEAD and not self._buf:
            # Fast path: the buffer is exactly one head (and no body), as for most requests.
            # The compiled scan takes it whole (it declines a buffer that is not exactly one
            # head), else a look for its end tells.
            self._begin_head()
            head = self._scanned(data)
            if head is None:
                end = data.find(b"\r\n\r\n")
                if end < 0 or end != len(data) - 4 or data[0] == 13 or data[0] == 10:
                    self._run(data)
                    return
                head = self._read_general(data)
                if head is None:
                    return  # failed
            self._running = True
            try:
                self._take_head(head)
            finally:
                self._running = False
            if self._stash or self._eof:
                self._after_callbacks()
        elif state != DEAD:
            self._run(data)

    def feed_eof(self) -> None:
        """The client closed its side. An incomplete request becomes a 400 error."""
        self._eof = True
        if not self._running:
            self._check_eof()

    def set_limits(self, limits: RequestLimits) -> None:
        """Use ``limits`` from the next request head on (a reload changed them)."""
        self._max_line = limits.max_request_line
        self._max_header_bytes = limits.max_header_bytes
        self._max_headers = limits.max_headers
        self._max_body = max_body = limits.max_body_bytes
        self._max_body_or_none = -1 if max_body is None else max_body

    def resume(self) -> None:
        """The response to the last request is done: parse what was stashed, if anything."""
        if self._state != _PAUSED:
            return
        self._state = HEAD
        if self._running:
            return  # the loop in _run picks the stash up
        if self._stash:
            data = b"".join(self._stash)
            self._stash.clear()
            self._run(data)
        elif self._eof:
            self._check_eof()

    def close(self) -> None:
        """Stop parsing for good (the adapter is closing the connection)."""
        self._state = DEAD
        # (Usually both are empty: a truth test is cheaper than a method call, per connection.)
        if self._stash:
            self._stash.clear()
        if self._buf:
            self._buf.clear()

    def unbind(self) -> None:
        """After :meth:`close`, once the connection is gone: let go of the handler. The parser
        and the handler refer to each other (its bound methods); without this, a closed
        connection would wait for the cyclic garbage collector instead of being freed at once.
        A closed parser makes no more calls."""
        self._state = DEAD
        self._handler = self._direct = None
        self._on_head = self._on_end = self._on_body = ignore

    def detach(self) -> bytes:
        """After a ``101 Switching Protocols``: the client bytes that followed the upgrade
        request, which now belong to the tunnel. The parser is closed."""
        data = b"".join(self._stash)
        self.close()
        return data

    # -- the machine ---------------------------------------------------------------------------

    def _run(self, data: bytes) -> None:
        self._running = True
        try:
            while True:
                pos = self._steps(data, 0)
                state = self._state
                if state == DEAD:
                    return
                if pos < len(data):  # _PAUSED
                    # Bytes fed from inside a callback come after these ones.
                    self._stash.insert(0, data[pos:] if pos else data)
                if not self._stash or (state != HEAD and state != BODY):
                    break
                data = b"".join(self._stash)
                self._stash.clear()
        finally:
            self._running = False
        if self._eof:
            self._check_eof()

    def _after_callbacks(self) -> None:
        """Input that arrived from inside a callback, or an EOF seen meanwhile."""
        state = self._state
        if self._stash and state in (HEAD, BODY):
            data = b"".join(self._stash)
            self._stash.clear()
            self._run(data)
        elif self._eof:
            self._check_eof()

    def _check_eof(self) -> None:
        if self._state == BODY:
            self._fail(400, "connection closed before the request body was complete")
        elif self._state == HEAD and self._buf:
            self._fail(400, "connection closed before the request head was complete")

    def _fail(self, status: int, reason: str) -> None:
        self.close()
        handler = self._handler
        if handler is not None:
            handler.on_request_error(status, reason)

    def _complete_head(self, raw: bytes, data: bytes, end: int) -> int:
        head = self._read_head(raw)
        if head is not None:  # (else it failed)
            self._take_head(head)
        return end

    def _take_head(self, head: RequestHead) -> None:
        """A request head was read: hand it on, then expect its body or its end."""
        self._head = head
        self._last_closes = not head.keep_alive
        direct = self._direct
        if direct is not None:
            direct.on_request_head(head)
        else:
            self._on_head(head)
        if self._state != HEAD:
            return  # the handler closed us
        if head.chunked:
            self._bind_body()
            framer = ChunkedFramer(self._max_body, max_trailer=self._max_header_bytes)
            self._expect_body(0, framer)
        elif head.content_length:
            self._bind_body()
            self._expect_body(head.content_length, None)
        else:
            self._end()

    def _bind_body(self) -> None:
        """A request body follows: the handler's body callback, for the framing (once)."""
        if self._on_body is ignore and self._handler is not None:
            self._on_body = self._handler.on_request_body

    def _read_head(self, raw: bytes) -> RequestHead | None:
        """Checks the limits on the complete head ``raw``, and reads it: the compiled scan for
        the common heads, :func:`read_request_head` for the others. ``None``: it failed."""
        head = self._scanned(raw)
        return head if head is not None else self._read_general(raw)

    def _read_general(self, raw: bytes) -> RequestHead | None:
        """:meth:`_read_head` for a head the scan declined (or with no scan)."""
        line_end = raw.find(b"\r\n")
        if line_end > self._max_line:
            self._fail(414, "request line too long")
            return None
        if len(raw) - line_end - 2 > self._max_header_bytes:
            self._fail(431, "request header section too large")
            return None
        # A header line takes at least 4 bytes ("a:" CRLF): count lines only for large heads.
        if (len(raw) - line_end) // 4 > self._max_headers and (
            raw.count(b"\r\n", line_end + 2) - 1 > self._max_headers
        ):
            self._fail(431, "too many header fields")
            return None
        if self._last_closes:
            self._fail(400, AFTER_CLOSE)
            return None

        upgraded = self._feed_head(raw, False)
        if upgraded < 0:
            return None
        cb = self._cb
        if not cb.headers_complete:
            self._fail(400, "malformed request head")
            return None
        try:
            head = read_request_head(
                raw, line_end, upgraded == 1, cb.message_complete, self._max_body
            )
        except FramingError as exc:
            self._fail(exc.status, exc.reason)
            return None
        if b"proxy-connection" in head._cut:
            self._ll_clean = False  # (see _last_closes)
        return head

    def _scanned(self, raw: bytes) -> RequestHead | None:
        """``raw`` read by the compiled scan, or ``None`` where it declines (or is not there).

        The scan checks all that llhttp would in the heads it takes (more strictly), and the
        limits (it declines a head over one, and :meth:`_read_head` then says which), so a
        head it takes needs no llhttp and no other look at its bytes. It takes only a buffer
        that is exactly one head: one CRLFCRLF, at its end."""
        scan = _SCAN
        if scan is None or self._fed or self._last_closes:
            return None
        fast = scan(
            raw, self._max_body_or_none, self._max_headers, self._max_line,
            self._max_header_bytes,
        )  # fmt: skip
        if fast is None:
            return None
        method, target, path, version, low, line_end, host, keep_alive, length, drop = fast
        head = new_request_head(
            method,
            target,
            path,
            version,
            raw,
            low,
            line_end,
            host,
            keep_alive,
            length,
            False,
            None,
            False,
            None,
        )
        if drop:
            head._cut = drop
        return head

    def _end(self) -> None:
        self._state = _PAUSED
        self.requests += 1
        direct = self._direct
        if direct is not None:
            direct.on_request_end()
        else:
            self._on_end()

    # -- the hooks of MessageParser ------------------------------------------------------------

    def _head_limits(self) -> bool:
        buf = self._buf
        line_end = buf.find(b"\r\n")
        if line_end < 0:
            if len(buf) > self._max_line:
                self._fail(414, "request line too long")
                return False
        elif line_end > self._max_line:
            self._fail(414, "request line too long")
            return False
        elif len(buf) - line_end - 2 > self._max_header_bytes:
            self._fail(431, "request header section too large")
            return False
        if self._last_closes:
            self._fail(400, AFTER_CLOSE)
            return False
        return True

    def _bad_head(self, text: str) -> None:
        self._fail(400, text)

    def _bad_body(self, exc: FramingError) -> None:
        self._fail(exc.status, exc.reason)

    def _count_body(self, n: int) -> None:
        head = self._head
        assert head is not None
        head.body_bytes += n

    def _message_end(self, end: int, n: int) -> int:
        self._end()
        return end


def read_request_head(
    raw: bytes, line_end: int, upgraded: bool, message_complete: bool, max_body: int | None
) -> RequestHead:
    """Reads the complete request head ``raw``, which llhttp has accepted: ``upgraded`` as an
    upgrade request, ``message_complete`` as a request without a body. ``line_end`` is where
    the request line ends. Raises :class:`FramingError` with the status to answer."""
    m = _REQUEST_LINE.match(raw)
    if m is not None:
        method, target, path, minor = m.groups()
        version = b"1.1" if minor == b"1" else b"1.0"
        authority = origin_target = None
        if method == b"CONNECT":
            raise FramingError("CONNECT is not supported", 501)
    else:
        method, target, path, version, authority, origin_target = _odd_request_line(raw[:line_end])

    low = raw.lower()
    host = None
    length_value = None
    transfer_encoding = None
    connection = None
    upgrade = None
    upgrades = 0
    expect_continue = False
    request_ids = 0
    xff = False
    # Names of the header lines that never go upstream as received; ``once`` while each
    # of them names a single line (the rewrite then stops at the first match).
    cut: list[bytes] = []
    once = True
    for name, value in _SPECIAL.findall(low, line_end):
        code = _CODES[name]
        if code >= _CUT_FROM:
            if name in cut:
                once = False
            else:
                cut.append(name)
            if code == _CONN:
                connection = value if connection is None else connection + b"," + value
            elif code == _XFF:
                xff = True
        elif code == _HOST:
            if host is not None:
                raise FramingError("duplicate Host header")
            host = value.rstrip(b" \t")
        elif code == _CL:
            if length_value is not None:
                raise FramingError("duplicate Content-Length")
            length_value = value
        elif code == _TE:
            if transfer_encoding is None:
                transfer_encoding = value
            else:
                transfer_encoding += b"," + value
        elif code == _UPGRADE:
            upgrade = value.rstrip(b" \t") if upgrade is None else upgrade + b"," + value
            upgrades += 1
        elif code == _EXPECT:
            expect_continue = value.rstrip(b" \t") == b"100-continue"
        else:  # _XRID
            request_ids += 1

    # Connection: keep-alive / close decide the client side; other tokens name hop-by-hop
    # headers to drop, except those the proxy owns (a client must not strip framing).
    keep_alive = version == b"1.1"
    upgrade_requested = False
    if connection is not None:
        connection = connection.rstrip(b" \t")
        if connection == b"close":
            keep_alive = False
        elif connection == b"keep-alive":
            keep_alive = True
        else:
            tokens = split_tokens(connection)
            keep_alive = keep_alive_option(tokens, keep_alive)
            upgrade_requested = b"upgrade" in tokens
            if cut_connection_options(tokens, low, cut, _NOT_HOP_BY_HOP):
                once = False  # not counted
    if upgrade is not None:
        if not upgrade_requested:
            # Upgrade without Connection: upgrade is meaningless: drop it.
            upgrade = None
            cut.append(b"upgrade")
            once = once and upgrades == 1
        elif not upgrade:
            raise FramingError("empty Upgrade header")
        elif version == b"1.0":
            # RFC 9110 7.8: a server ignores Upgrade in HTTP/1.0, but llhttp has taken the
            # bytes after this head for the upgraded protocol; refuse it, as HAProxy does.
            raise FramingError("Upgrade in an HTTP/1.0 request")
    if upgraded != (upgrade is not None):
        raise FramingError("ambiguous upgrade request")

    chunked = False
    length = None
    if transfer_encoding is not None:
        if version == b"1.0":
            raise FramingError("Transfer-Encoding in an HTTP/1.0 request")
        if length_value is not None:
            raise FramingError("both Content-Length and Transfer-Encoding")
        codings = split_tokens(transfer_encoding)
        if not codings or codings[-1] != b"chunked" or codings.count(b"chunked") != 1:
            raise FramingError("Transfer-Encoding must end with chunked")
        chunked = True
    elif length_value is not None:
        length = content_length(length_value)
        if length < 0:
            raise FramingError("invalid Content-Length")
        if max_body is not None and length > max_body:
            raise FramingError("request body too large", 413)
    has_body = chunked or bool(length)
    if has_body and upgrade is not None:
        raise FramingError("upgrade request with a body")
    if has_body == message_complete and not upgraded:
        raise FramingError("ambiguous request framing")

    if authority is not None:
        if host is not None:
            cut.append(b"host")
        host = authority.lower()
    elif host is None:
        if version == b"1.1":
            raise FramingError("missing Host header")
    elif host.translate(None, _HOST_CHARS):
        raise FramingError("invalid Host header")
    request_id = None
    if request_ids:
        # Keep the client's X-Request-ID when there is exactly one usable value; otherwise
        # drop them all and let the proxy generate one.
        if request_ids == 1:
            request_id = raw_values(raw, low, b"x-request-id", line_end)[0]
        if request_id is None or not 0 < len(request_id) <= _MAX_REQUEST_ID:
            request_id = None
            cut.append(b"x-request-id")
            once = once and request_ids == 1

    head = new_request_head(
        method,
        target,
        path,
        version,
        raw,
        low,
        line_end,
        host,
        keep_alive,
        length,
        chunked,
        upgrade,
        expect_continue and version == b"1.1",
        request_id,
    )
    head._origin_target = origin_target
    if cut:
        head._cut = tuple(cut)
        head._cut_once = once
        if xff:
            head._xff = [v for v in raw_values(raw, low, b"x-forwarded-for", line_end) if v]
    return head


def _odd_request_line(line: bytes) -> tuple[bytes, bytes, bytes, bytes, bytes | None, bytes | None]:
    """The request lines ``_REQUEST_LINE`` does not take: the other target forms, and the
    errors (raised as :class:`FramingError`)."""
    try:
        method, target, proto = line.split(b" ")
    except ValueError:
        raise FramingError("malformed request line") from None
    if proto == b"HTTP/1.1":
        version = b"1.1"
    elif proto == b"HTTP/1.0":
        version = b"1.0"
    elif proto.startswith(b"HTTP/"):
        raise FramingError("only HTTP/1.0 and HTTP/1.1 are supported", 505)
    else:
        raise FramingError("not an HTTP request")
    if method == b"CONNECT":
        raise FramingError("CONNECT is not supported", 501)
    if b"#" in target:
        raise FramingError("fragment in request target")
    if target == b"*" and method == b"OPTIONS":
        return method, target, target, version, None, None
    split = _split_absolute(target)
    if split is None:
        raise FramingError("invalid request target")
    authority, origin_target = split
    q = origin_target.find(b"?")
    path = origin_target if q < 0 else origin_target[:q]
    return method, target, path, version, authority, origin_target


def _split_absolute(target: bytes) -> tuple[bytes, bytes] | None:
    """``http://authority/path?q`` -> (authority, ``/path?q``); ``None`` if not absolute-form."""
    scheme = target[:8].lower()
    if scheme.startswith(b"http://"):
        rest = target[7:]
    elif scheme.startswith(b"https://"):
        rest = target[8:]
    else:
        return None
    end = len(rest)
    for i in (rest.find(b"/"), rest.find(b"?")):
        if 0 <= i < end:
            end = i
    authority = rest[:end]
    if not authority or authority.translate(None, _HOST_CHARS):
        return None
    origin = rest[end:]
    return authority, origin if origin[:1] == b"/" else b"/" + origin

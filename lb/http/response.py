"""Upstream side of the L7 proxy: bytes from a backend in, response events out.

Theory of operation
-------------------
One :class:`ResponseParser` lives as long as an upstream connection. Before each request is sent
on it the proxy calls :meth:`ResponseParser.start`, saying what the response must be framed
against: a ``HEAD`` request (no body whatever the headers say), an upgrade request (``101`` is
allowed), an HTTP/1.0 client (chunked bodies are de-chunked, since such a client cannot read them).
Then it feeds every byte the backend sends, and the parser calls the handler:

* ``on_response_interim(head)`` for each 1xx other than 101 (``100 Continue``, ``103 Early
  Hints``): forward ``head.raw`` to HTTP/1.1 clients, drop it for HTTP/1.0 ones. The final
  response follows.
* ``on_response_head(head)`` for the final response: send
  :func:`lb.http.rewrite_response_head` of it to the client.
* ``on_response_body(data)`` with raw body bytes (chunk framing included, unless de-chunking):
  forward them untouched.
* ``on_response_end(reusable)`` when the response is complete. ``reusable`` is true when the
  connection may go back to the pool: the backend allows keep-alive, the body was delimited by
  length or chunking, and the backend sent nothing after the end of the response. The parser is
  then idle until the next :meth:`start`. (The proxy must also not reuse a connection whose request
  body it did not finish sending.)
* ``on_response_whole(head, body, reusable)`` when one buffer held exactly a whole response
  (the common small response, taken by the compiled fast path): the same as
  ``on_response_head(head)``, ``on_response_body(body)`` (unless empty) and
  ``on_response_end(reusable)``, in one call. The parser is already idle (or closed) then.
* ``on_response_upgrade(data)`` right after the head of a ``101 Switching Protocols``: ``data``
  are the bytes that followed the head, the first tunnel bytes. From then on the connection is a
  tunnel and the parser is closed.
* ``on_response_error(reason)`` when the backend breaks the protocol, closes early, or talks
  unprompted. The parser is closed: answer 502 if nothing was sent to the client yet, else close
  the client connection; never reuse the upstream connection. ``bytes_received == 0`` at that
  point means the backend closed without sending anything, which is the keep-alive race a retry
  may cover.

Framing follows RFC 9112 section 6.3: no body for HEAD, 1xx, 204 and 304; chunked if
Transfer-Encoding ends with chunked; otherwise until the connection closes if Transfer-Encoding is
present; then Content-Length; otherwise until the connection closes (:meth:`feed_eof` ends it).

How HEAD works: httptools 0.9 has no way to tell llhttp "this response has no body" (llhttp's
``on_headers_complete`` may return 1 for that, but the Cython wrapper returns 1 only for upgrades),
so llhttp cannot frame a HEAD response by itself. Here llhttp only parses heads and the framing is
ours, so a HEAD response simply ends after its head; llhttp, left waiting for a body, is replaced
by a fresh parser for the next response.
"""

from __future__ import annotations

import re
from typing import Protocol

import httptools

from lb.http._fast import SCAN_RESPONSE, ScanResponse
from lb.http.chunked import ChunkedFramer, FramingError
from lb.http.framing import (
    BODY,
    DEAD,
    HEAD,
    MessageParser,
    content_length,
    cut_connection_options,
    keep_alive_option,
)
from lb.http.heads import ResponseHead, new_response_head, split_tokens


class ResponseHandler(Protocol):
    """What the upstream-side adapter implements."""

    def on_response_interim(self, head: ResponseHead) -> None: ...

    def on_response_head(self, head: ResponseHead) -> None: ...

    def on_response_body(self, data: bytes) -> None: ...

    def on_response_end(self, reusable: bool) -> None: ...

    def on_response_whole(self, head: ResponseHead, body: bytes, reusable: bool) -> None: ...

    def on_response_upgrade(self, data: bytes) -> None: ...

    def on_response_error(self, reason: str) -> None: ...


_CL = 1
_TE = 2
_CONN = 3
_UPGRADE = 4
_HOP = 5

_CODES: dict[bytes, int] = {
    b"content-length": _CL,
    b"transfer-encoding": _TE,
    b"connection": _CONN,
    b"upgrade": _UPGRADE,
    b"keep-alive": _HOP,
    b"proxy-connection": _HOP,
}

_NAMES: list[bytes] = sorted(_CODES, key=len, reverse=True)
_SPECIAL = re.compile(rb"\r\n(" + b"|".join(_NAMES) + rb"):[ \t]*([^\r]*)")

#: Connection tokens that never make us drop a header: keywords, and the framing headers.
_NOT_HOP_BY_HOP = frozenset(
    {b"close", b"keep-alive", b"upgrade", b"content-length", b"transfer-encoding"}
)

#: The compiled scan of common heads (:mod:`lb.http._speedups`), or ``None``; tests swap it.
_SCAN = SCAN_RESPONSE

# After HEAD, BODY and DEAD (lb.http.framing): no response is expected (the connection may
# be pooled); a body runs until the connection closes.
_IDLE = 3
_UNTIL_EOF = 4


class ResponseParser(MessageParser):
    """Frames the responses of one upstream connection; see the module docstring. The stepping
    through heads and bodies is :class:`lb.http.framing.MessageParser`'s."""

    __slots__ = (
        "_dechunk",
        "_head",
        "_head_request",
        "_max_head",
        "_on_end",
        "_on_error",
        "_on_head",
        "_on_interim",
        "_on_upgrade",
        "_on_whole",
        "_scan",
        "_upgrade",
        "bytes_received",
        "extra_bytes",
        "responses",
    )

    def __init__(self, handler: ResponseHandler, *, max_head_bytes: int = 65536) -> None:
        MessageParser.__init__(self, httptools.HttpResponseParser, handler.on_response_body, _IDLE)
        self._on_interim = handler.on_response_interim
        self._on_head = handler.on_response_head
        self._on_end = handler.on_response_end
        self._on_whole = handler.on_response_whole
        self._on_upgrade = handler.on_response_upgrade
        self._on_error = handler.on_response_error
        self._max_head = max_head_bytes
        self._head: ResponseHead | None = None
        self._head_request = False
        self._upgrade = False
        self._dechunk = False
        self._scan: ScanResponse | None = None
        #: Bytes received for the current response (interim responses included).
        self.bytes_received = 0
        #: Bytes the backend sent after a complete response (a protocol error; logged).
        self.extra_bytes = 0
        #: Responses completed on this connection.
        self.responses = 0

    @property
    def idle(self) -> bool:
        """No response is expected: the connection may sit in the pool."""
        return self._state == _IDLE

    @property
    def closed(self) -> bool:
        return self._state == DEAD

    @property
    def head(self) -> ResponseHead | None:
        """The current (or last) final response head."""
        return self._head

    def start(
        self, head_request: bool = False, upgrade: bool = False, dechunk: bool = False
    ) -> None:
        """Expect the response to a request about to be sent (call before sending it)."""
        if self._state != _IDLE:
            raise RuntimeError("start() while a response is in progress or after close")
        self._state = HEAD
        self._head_request = head_request
        self._upgrade = upgrade
        self._dechunk = dechunk
        self._scan = _SCAN
        self._head = None
        self.bytes_received = 0

    def close(self) -> None:
        self._state = DEAD
        self._buf.clear()

    def feed(self, data: bytes) -> None:
        """Frame bytes from the backend; events are delivered before this returns."""
        state = self._state
        if state == DEAD or not data:
            return
        if state == _IDLE:
            self.extra_bytes += len(data)
            return self._fail("unsolicited data from upstream")
        self.bytes_received += len(data)
        if state == HEAD and not self._buf and self._scan is not None:
            # The common case first: the buffer starts with a whole head the compiled scan takes
            # (and usually holds the whole response; the scan finds the head's end itself).
            # Anything else takes the general path.
            pos = self._scan_head(data)
            if pos < len(data):
                # A body that goes on past the head (or a head left to the general path).
                self.feed_from(data, pos if pos > 0 else 0)
            return
        if state == _UNTIL_EOF:
            self._count_body(len(data))
            self._on_body(data)
            return
        self.feed_from(data, 0)

    def feed_from(self, data: bytes, pos: int) -> None:
        """The general loop over ``data[pos:]`` (bytes already counted)."""
        pos = self._steps(data, pos)
        n = len(data)
        if pos < n and self._state == _UNTIL_EOF:
            self._count_body(n - pos)
            self._on_body(data[pos:] if pos else data)

    def feed_eof(self) -> None:
        """The backend closed the connection."""
        state = self._state
        if state == _UNTIL_EOF:
            self._state = DEAD
            self.responses += 1
            self._on_end(False)
        elif state == HEAD:
            if self.bytes_received:
                self._fail("upstream closed the connection before a complete response head")
            else:
                self._fail("upstream closed the connection without responding")
        elif state == BODY:
            self._fail("upstream closed the connection before the response body was complete")
        else:
            self._state = DEAD

    # -- the machine ---------------------------------------------------------------------------

    def _scan_head(self, data: bytes) -> int:
        """Try the compiled scan on the head ``data`` starts with (it finds the head's end,
        within ``max_head_bytes``). Returns where the general loop should go on, or -1 when
        there is no whole head or it is left to the general path (which then starts over,
        with llhttp)."""
        n = len(data)
        scan = self._scan
        assert scan is not None
        fast = scan(data, self._head_request, self._max_head)
        if fast is None:
            return -1
        (status, version, low, line_end, length, chunked, no_body, close_delimited,
         keep_alive, conn_keep_alive, cut, conn_at, raw) = fast  # fmt: skip
        end = len(raw)
        if chunked and self._dechunk:
            # The scan does not de-chunk: a chunked response to an HTTP/1.0 client takes the
            # general path (every other head frames the same for either kind of client).
            return -1
        # No llhttp here: the scan takes only heads llhttp would take (lb/http/_speedups.pyx,
        # checked against llhttp by tests/unit/test_response_scan_llhttp.py).
        whole = length is not None and not no_body and end + length == n
        head = new_response_head(status, version, raw, low, line_end)
        head.content_length = length
        head.chunked = chunked
        head.no_body = no_body
        head.close_delimited = close_delimited
        head.keep_alive = keep_alive
        head._conn_keep_alive = conn_keep_alive
        head._conn_at = conn_at
        if cut:
            head._cut = cut
        if whole or (no_body and end == n):
            # The whole response is this buffer: one event instead of head, body and end.
            self._head = head
            self.responses += 1
            self._state = _IDLE if keep_alive else DEAD
            if whole and length:
                head.body_bytes = length
                self._on_whole(head, data[end:], keep_alive)
            else:
                self._on_whole(head, b"", keep_alive)
            return n
        return self._deliver(head, data, end)

    def _fail(self, reason: str) -> None:
        self.close()
        self._on_error(reason)

    def _complete_head(self, raw: bytes, data: bytes, end: int) -> int:
        n = len(data)
        if len(raw) > self._max_head:
            self._fail("response head too large")
            return n
        if self._feed_head(raw, raw[9:12] == b"101") < 0:
            return n
        if not self._cb.headers_complete:
            self._fail("malformed response head")
            return n
        try:
            head = read_response_head(raw, self._head_request, self._dechunk)
        except FramingError as exc:
            self._fail(exc.reason)
            return n
        if head.status == 101:
            if not self._upgrade:
                self._fail("unexpected 101 Switching Protocols")
                return n
            self._head = head
            self._state = DEAD
            self.responses += 1
            self._on_head(head)
            self._on_upgrade(data[end:])
            return n
        if head.status < 200:
            self._on_interim(head)
            return end  # the final response follows; stay in HEAD
        return self._deliver(head, data, end)

    def _deliver(self, head: ResponseHead, data: bytes, end: int) -> int:
        """Hand a final response head on, then frame its body from ``data[end:]``."""
        n = len(data)
        self._head = head
        self._on_head(head)
        if self._state != HEAD:
            return n  # the handler closed us
        if head.no_body:
            return self._message_end(end, n)
        length = head.content_length
        if length is not None:
            if end + length <= n:
                # The whole body is in this buffer: the common small response.
                if length:
                    head.body_bytes = length
                    self._on_body(data[end:] if end + length == n else data[end : end + length])
                    if self._state != HEAD:
                        return n
                return self._message_end(end + length, n)
            self._expect_body(length, None)
        elif head.chunked:
            self._out = [] if head.dechunked else None
            self._expect_body(0, ChunkedFramer(None))
        else:
            self._state = _UNTIL_EOF
        return end

    # -- the hooks of MessageParser ------------------------------------------------------------

    def _head_limits(self) -> bool:
        if len(self._buf) > self._max_head:
            self._fail("response head too large")
            return False
        return True

    def _bad_head(self, text: str) -> None:
        self._fail("invalid response head: " + text)

    def _bad_body(self, exc: FramingError) -> None:
        self._fail("invalid chunked response body: " + exc.reason)

    def _count_body(self, n: int) -> None:
        head = self._head
        assert head is not None
        head.body_bytes += n

    def _message_end(self, end: int, n: int) -> int:
        head = self._head
        assert head is not None
        self.responses += 1
        extra = n - end
        if extra:
            # A backend that sends more than it framed is broken (or is answering a request we
            # never sent): forward nothing of it, and never reuse the connection.
            self.extra_bytes += extra
            self._state = DEAD
            self._on_end(False)
            return n
        reusable = head.keep_alive
        self._state = _IDLE if reusable else DEAD
        self._on_end(reusable)
        return n


def read_response_head(raw: bytes, head_request: bool, dechunk: bool) -> ResponseHead:
    """Reads the complete response head ``raw``, which llhttp has accepted, and frames it
    (RFC 9112 section 6.3) for a ``HEAD`` request or not, and for a client that needs the body
    de-chunked or not. Raises :class:`FramingError`. A ``101`` is not framed: its head ends the
    HTTP part of the connection."""
    proto = raw[:9]
    if proto == b"HTTP/1.1 ":
        version = b"1.1"
    elif proto == b"HTTP/1.0 ":
        version = b"1.0"
    else:
        raise FramingError("unsupported response version")
    status_text = raw[9:12]
    status = int(status_text) if status_text.isdigit() else 0
    if not 100 <= status <= 599:
        raise FramingError("invalid response status")
    line_end = raw.find(b"\r\n")
    low = raw.lower()
    head = new_response_head(status, version, raw, low, line_end)

    length_value = None
    transfer_encoding = None
    connection = None
    has_upgrade = False
    # Names of the header lines that never reach the client (see the request side).
    cut: list[bytes] = []
    once = True
    for name, value in _SPECIAL.findall(low, line_end):
        code = _CODES[name]
        if code == _CL:
            if length_value is not None:
                raise FramingError("duplicate Content-Length")
            length_value = value
        elif code == _CONN:
            if connection is None:
                connection = value
            else:
                connection += b"," + value
                once = False
        elif code == _TE:
            if transfer_encoding is None:
                transfer_encoding = value
            else:
                transfer_encoding += b"," + value
                once = False
        elif code == _UPGRADE:
            if has_upgrade:
                once = False
            has_upgrade = True
        elif name in cut:
            once = False
        else:
            cut.append(name)

    keep_alive = version == b"1.1"
    if connection is not None:
        connection = connection.rstrip(b" \t")
        if connection == b"keep-alive":
            keep_alive = True
            head._conn_keep_alive = status != 101
        else:
            tokens = split_tokens(connection)
            keep_alive = keep_alive_option(tokens, keep_alive)
            if status != 101:
                cut.append(b"connection")
            if cut_connection_options(tokens, low, cut, _NOT_HOP_BY_HOP):
                once = False  # not counted

    if status == 101:
        head.no_body = True
        head.keep_alive = False
        if cut:
            head._cut = tuple(cut)
            head._cut_once = once
        return head
    if has_upgrade:
        cut.append(b"upgrade")

    chunked = False
    if length_value is not None:
        # (llhttp has rejected Content-Length together with Transfer-Encoding.)
        length = content_length(length_value)
        if length < 0:
            raise FramingError("invalid Content-Length")
        head.content_length = length
    elif transfer_encoding is not None:
        if version == b"1.0":
            raise FramingError("Transfer-Encoding in an HTTP/1.0 response")
        codings = split_tokens(transfer_encoding)
        if codings.count(b"chunked") > 1:
            raise FramingError("invalid Transfer-Encoding")
        chunked = head.chunked = bool(codings) and codings[-1] == b"chunked"
        if chunked and dechunk:
            head.dechunked = True
            cut.append(b"transfer-encoding")
    if status == 204:
        # RFC 9110 8.6 / RFC 9112 6.1: a 204 has no Content-Length or Transfer-Encoding; a
        # client (or cache) in front that honours one would read the next response as this
        # one's body. They go, as HAProxy drops them.
        if length_value is not None:
            cut.append(b"content-length")
        if transfer_encoding is not None and not head.dechunked:
            cut.append(b"transfer-encoding")
    if status < 200 or status == 204 or status == 304 or head_request:
        head.no_body = True
    elif chunked:
        head.close_delimited = head.dechunked
    elif head.content_length is None:
        # No length, or a coding other than chunked: the body ends with the connection.
        head.close_delimited = True
        keep_alive = False
    head.keep_alive = keep_alive
    if cut:
        head._cut = tuple(cut)
        head._cut_once = once
    return head

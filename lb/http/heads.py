"""Parsed message heads: what the parsers hand to the proxy, and what the rewriters read.

A head keeps the exact bytes it was parsed from (``raw``). Rewriting works on those bytes: it
cuts whole header lines out and appends new ones, so every header the proxy does not own goes
out byte for byte as it came in (original case, original value), and only the framing the proxy
must own is touched.

``headers`` is built on first access (the proxy itself never needs the full list, so the hot path
does not pay for it); values are stripped of surrounding whitespace.
"""

from __future__ import annotations

from lb.http._fast import HEADER_VALUE

Headers = list[tuple[bytes, bytes]]
Spans = list[tuple[int, int]]


def parse_header_lines(raw: bytes, line_end: int) -> Headers:
    """All header fields of a validated head, as ``(lowercase name, stripped value)`` pairs."""
    section = raw[line_end + 2 : -4]
    if not section:
        return []
    out: Headers = []
    for line in section.split(b"\r\n"):
        name, _, value = line.partition(b":")
        out.append((name.lower(), value.strip(b" \t")))
    return out


def raw_values(raw: bytes, low: bytes, name: bytes, start: int) -> list[bytes]:
    """The values of header ``name`` (lowercase) as sent (original case), stripped, in order.

    ``low`` is ``raw.lower()`` and ``start`` the offset of the CRLF ending the start line.
    """
    pattern = b"\r\n" + name + b":"
    skip = len(pattern)
    out: list[bytes] = []
    i = low.find(pattern, start)
    while i >= 0:
        j = low.find(b"\r\n", i + 2)
        out.append(raw[i + skip : j].strip(b" \t"))
        i = low.find(pattern, j)
    return out


def split_tokens(value: bytes) -> list[bytes]:
    """A comma-separated list (Connection, Transfer-Encoding) as stripped, non-empty items.

    Pass values from the lowercased head: tokens compare case-insensitively.
    """
    return [token for token in (t.strip(b" \t") for t in value.split(b",")) if token]


#: Search patterns for the header names the parsers cut most often.
_PATTERNS = {
    name: b"\r\n" + name + b":"
    for name in (b"connection", b"keep-alive", b"proxy-connection", b"upgrade", b"te")
}


def cut_spans(low: bytes, start: int, names: tuple[bytes, ...], once: bool) -> Spans:
    """Sorted ``(start, end)`` offsets of the header lines called ``names`` (lowercase), CRLF
    included, in a lowercased head; ``start`` is the offset of the CRLF ending the start line.
    ``once``: each name is known to occur on one line only, so stop at the first match.

    ``CRLF name ":"`` matches exactly those lines because llhttp already rejected heads with
    whitespace before a colon, folded lines, and bare CR or LF.
    """
    spans: Spans = []
    for name in names:
        pattern = _PATTERNS.get(name) or b"\r\n" + name + b":"
        i = low.find(pattern, start)
        while i >= 0:
            j = low.find(b"\r\n", i + 2)
            spans.append((i + 2, j + 2))
            i = -1 if once else low.find(pattern, j)
    if len(spans) > 1:
        spans.sort()
    return spans


def without_lines(
    raw: bytes, low: bytes, start: int, names: tuple[bytes, ...], once: bool
) -> list[bytes]:
    """The header section ``raw[start + 2 : -2]`` as slices, minus the lines called ``names``."""
    end = len(raw) - 2
    pos = start + 2
    if not names:
        return [raw[pos:end]] if end > pos else []
    pieces: list[bytes] = []
    for a, b in cut_spans(low, start, names, once):
        if a > pos:
            pieces.append(raw[pos:a])
        pos = b
    if end > pos:
        pieces.append(raw[pos:end])
    return pieces


class RequestHead:
    """One request head, as parsed from the client.

    ``method``, ``target`` (raw request-target), ``path`` (origin-form path, no query) and
    ``version`` (``b"1.1"`` or ``b"1.0"``) come from the request line. ``headers`` holds
    ``(lowercase name, value)`` pairs in arrival order. ``host`` is the lowercased Host (or the
    authority of an absolute-form target), ``None`` for an HTTP/1.0 request without one.
    ``keep_alive`` is the client's wish for the client connection. ``content_length`` and
    ``chunked`` are the body framing (at most one is set); ``upgrade`` is the Upgrade token list,
    lowercased, when the request asks to switch protocols (``Connection: upgrade``), else
    ``None``; ``expect_continue`` is ``Expect: 100-continue`` on an HTTP/1.1 request.
    ``request_id`` is the client's own ``X-Request-ID``, if it sent a usable one.
    ``raw`` is the exact head, CRLFCRLF included; ``body_bytes`` counts body bytes on the wire
    (chunk framing included) as they are delivered, for the access log.
    """

    __slots__ = (
        "_cut",
        "_cut_once",
        "_headers",
        "_line_end",
        "_low",
        "_origin_target",
        "_xff",
        "body_bytes",
        "chunked",
        "content_length",
        "expect_continue",
        "host",
        "keep_alive",
        "method",
        "path",
        "raw",
        "request_id",
        "target",
        "upgrade",
        "version",
    )

    def __init__(
        self,
        method: bytes,
        target: bytes,
        path: bytes,
        version: bytes,
        raw: bytes,
        low: bytes,
        line_end: int,
        host: bytes | None,
        keep_alive: bool,
        content_length: int | None,
        chunked: bool,
        upgrade: bytes | None,
        expect_continue: bool,
        request_id: bytes | None,
    ) -> None:
        self._init(
            method, target, path, version, raw, low, line_end, host, keep_alive,
            content_length, chunked, upgrade, expect_continue, request_id,
        )  # fmt: skip

    def _init(
        self,
        method: bytes,
        target: bytes,
        path: bytes,
        version: bytes,
        raw: bytes,
        low: bytes,
        line_end: int,
        host: bytes | None,
        keep_alive: bool,
        content_length: int | None,
        chunked: bool,
        upgrade: bytes | None,
        expect_continue: bool,
        request_id: bytes | None,
    ) -> None:
        """What ``__init__`` does (:func:`new_request_head` calls it without the type call)."""
        self.method = method
        self.target = target
        self.path = path
        self.version = version
        self.raw = raw
        self.host = host
        self.keep_alive = keep_alive
        self.content_length = content_length
        self.chunked = chunked
        self.upgrade = upgrade
        self.expect_continue = expect_continue
        self.request_id = request_id
        self.body_bytes = 0
        # Rewrite inputs: the lowercased head, the end of the request line, header names to
        # drop upstream, X-Forwarded-For values to extend, and the origin-form target when the
        # client used absolute-form.
        self._low = low
        self._line_end = line_end
        self._cut: tuple[bytes, ...] = ()
        self._cut_once = True
        self._xff: list[bytes] | None = None
        self._origin_target: bytes | None = None
        self._headers: Headers | None = None

    @property
    def headers(self) -> Headers:
        """``(lowercase name, value)`` pairs in arrival order (parsed on first access)."""
        headers = self._headers
        if headers is None:
            headers = self._headers = parse_header_lines(self.raw, self._line_end)
        return headers

    @property
    def has_body(self) -> bool:
        return self.chunked or bool(self.content_length)

    def get(self, name: bytes) -> bytes | None:
        """The first value of header ``name`` (lowercase) as sent; ``None`` when absent."""
        if HEADER_VALUE is not None:  # compiled: one memmem, no list (a hash key per request)
            return HEADER_VALUE(self.raw, self._low, self._line_end, name)
        values = raw_values(self.raw, self._low, name, self._line_end)
        return values[0] if values else None

    def get_all(self, name: bytes) -> list[bytes]:
        return raw_values(self.raw, self._low, name, self._line_end)

    def cookie(self, name: bytes) -> bytes | None:
        """Cookie ``name`` from the Cookie header(s), for sticky sessions and hashing."""
        for v in self.get_all(b"cookie"):
            for pair in v.split(b";"):
                key, sep, value = pair.strip(b" \t").partition(b"=")
                if sep and key == name:
                    return value
        return None

    def __repr__(self) -> str:
        return f"<RequestHead {self.method!r} {self.target!r} HTTP/{self.version.decode()}>"


class ResponseHead:
    """One response head from a backend.

    ``status`` and ``version`` come from the status line; ``headers`` as for requests.
    ``content_length``/``chunked`` are the framing as sent, ``no_body`` is true when this
    response has no body whatever its headers say (HEAD, 1xx, 204, 304). ``keep_alive`` says the
    backend lets us reuse the connection (its version, its Connection header, and a framing that
    does not end with the connection). ``close_delimited`` says the body *as forwarded to the
    client* ends when the connection closes (backend sent neither length nor chunking, or the
    parser de-chunks it for an HTTP/1.0 client): the client connection must then be closed after
    it, and :func:`lb.http.rewrite_response_head` says ``Connection: close``.
    """

    __slots__ = (
        "_conn_at",
        "_conn_keep_alive",
        "_cut",
        "_cut_once",
        "_headers",
        "_line_end",
        "_low",
        "body_bytes",
        "chunked",
        "close_delimited",
        "content_length",
        "dechunked",
        "keep_alive",
        "no_body",
        "raw",
        "status",
        "version",
    )

    def __init__(self, status: int, version: bytes, raw: bytes, low: bytes, line_end: int) -> None:
        self._init(status, version, raw, low, line_end)

    def _init(self, status: int, version: bytes, raw: bytes, low: bytes, line_end: int) -> None:
        """What ``__init__`` does (:func:`new_response_head` calls it without the type call)."""
        self.status = status
        self.version = version
        self.raw = raw
        self._low = low
        self._line_end = line_end
        self._headers: Headers | None = None
        self.content_length: int | None = None
        self.chunked = False
        self.no_body = False
        self.keep_alive = True
        self.close_delimited = False
        self.dechunked = False
        self.body_bytes = 0
        # Header names to drop towards the client; whether a Connection header that only says
        # keep-alive is present (harmless to forward, unless the proxy closes the connection).
        self._cut: tuple[bytes, ...] = ()
        self._cut_once = True
        self._conn_keep_alive = False
        # Where that Connection: keep-alive line starts, when the compiled scan read the head
        # (0: not known, or no such line): the last response drops it by this offset.
        self._conn_at = 0

    @property
    def headers(self) -> Headers:
        """``(lowercase name, value)`` pairs in arrival order (parsed on first access)."""
        headers = self._headers
        if headers is None:
            headers = self._headers = parse_header_lines(self.raw, self._line_end)
        return headers

    def get(self, name: bytes) -> bytes | None:
        values = raw_values(self.raw, self._low, name, self._line_end)
        return values[0] if values else None

    def get_all(self, name: bytes) -> list[bytes]:
        return raw_values(self.raw, self._low, name, self._line_end)

    def __repr__(self) -> str:
        return f"<ResponseHead {self.status} HTTP/{self.version.decode()}>"


# Where this module is compiled, these are C calls that make a head without the type call (no
# argument tuple to build and parse, no ``__init__`` looked up): the parsers make a head per
# request and per response.


def new_request_head(
    method: bytes,
    target: bytes,
    path: bytes,
    version: bytes,
    raw: bytes,
    low: bytes,
    line_end: int,
    host: bytes | None,
    keep_alive: bool,
    content_length: int | None,
    chunked: bool,
    upgrade: bytes | None,
    expect_continue: bool,
    request_id: bytes | None,
) -> RequestHead:
    """``RequestHead(...)`` with the same arguments."""
    head = RequestHead.__new__(RequestHead)
    head._init(
        method, target, path, version, raw, low, line_end, host, keep_alive, content_length,
        chunked, upgrade, expect_continue, request_id,
    )  # fmt: skip
    return head


def new_response_head(
    status: int, version: bytes, raw: bytes, low: bytes, line_end: int
) -> ResponseHead:
    """``ResponseHead(status, version, raw, low, line_end)``."""
    head = ResponseHead.__new__(ResponseHead)
    head._init(status, version, raw, low, line_end)
    return head

"""Head rewriting between client and backend, from the raw head bytes.

Both directions work the same way: keep the start line and every header line the proxy does not
own exactly as received (slices of ``head.raw``), leave out the hop-by-hop lines the parser found
(one ``find`` per name in the lowercased head, and only when there is something to drop), and
append the proxy's own lines. The pieces are joined once. Body framing headers (Content-Length,
Transfer-Encoding) are never touched upstream, so the body can be forwarded as raw bytes.

Upstream, the request always goes out as HTTP/1.1 with keep-alive (no Connection header, except
``Connection: upgrade`` for upgrade requests), without Connection, Keep-Alive, Proxy-Connection,
TE, Trailer, Upgrade (unless upgrading) and the headers the client named in Connection (except
the ones the proxy owns: Host, Content-Length, Transfer-Encoding, X-Forwarded-*, X-Request-ID).
X-Forwarded-For is extended with the client address (all incoming X-Forwarded-For lines are merged
into one), X-Forwarded-Proto and X-Forwarded-Host are replaced, and X-Request-ID is kept or added.
The RFC 7239 ``Forwarded`` header is left alone.
"""

from __future__ import annotations

import itertools
import os

from lb.http._fast import REQUEST_ID, RESPONSE_CLOSE, RESPONSE_OUT, UPSTREAM_HEAD
from lb.http.heads import RequestHead, ResponseHead, without_lines

#: The compiled builder of common upstream heads (:mod:`lb.http._speedups`), or ``None``;
#: tests swap it.
_BUILD = UPSTREAM_HEAD
#: ``b"%s%012x" % (prefix, n)`` in C, or ``None``.
_RID = REQUEST_ID
#: The common response head plus the proxy's lines plus the body, in one allocation, in C, or
#: ``None``; tests swap it.
_OUT = RESPONSE_OUT
#: The same for the last response on a client connection (``Connection: close``), or ``None``;
#: tests swap it.
_OUT_CLOSE = RESPONSE_CLOSE

_counter = itertools.count(1)
_prefix = os.urandom(6).hex().encode()


def _reseed() -> None:
    global _counter, _prefix
    _counter = itertools.count(1)
    _prefix = os.urandom(6).hex().encode()


# A forked worker must not repeat its parent's IDs.
os.register_at_fork(after_in_child=_reseed)


def new_request_id() -> bytes:
    """A unique request ID: 12 random hex digits per process, then a hex counter.

    About 0.15 us: no syscall or uuid per request; unique across workers and restarts with
    overwhelming probability, and ordered within a process (handy when reading logs).
    """
    n = next(_counter)
    return b"%s%012x" % (_prefix, n) if _RID is None else _RID(_prefix, n)


def header_line(name: bytes, value: bytes) -> bytes:
    """``name: value\\r\\n`` for the ``extra`` argument of :func:`rewrite_response_head`.

    Raises ``ValueError`` if either part could break the framing; build these once (a cookie
    template, say) rather than per request where possible.
    """
    if not name or any(c in name for c in b" \t\r\n:") or any(c in value for c in b"\r\n\0"):
        raise ValueError(f"invalid header line {name!r}: {value!r}")
    return name + b": " + value + b"\r\n"


def build_upstream_head(
    head: RequestHead,
    *,
    client_ip: bytes,
    proto: bytes,
    request_id: bytes | None = None,
    via: bytes | None = None,
) -> tuple[bytes, bytes]:
    """The request head to send to the backend, and the request ID it carries.

    ``client_ip`` is the peer address as ASCII bytes (encode it once per connection), ``proto``
    is ``b"http"`` or ``b"https"``. The client's own ``X-Request-ID`` wins; otherwise
    ``request_id`` is used if given, else a new one is generated. ``via`` adds a ``Via`` line with
    that value (e.g. ``b"1.1 lb"``).
    """
    return upstream_request_head(head, client_ip, proto, request_id, via)


def upstream_request_head(
    head: RequestHead,
    client_ip: bytes,
    proto: bytes,
    request_id: bytes | None,
    via: bytes | None,
) -> tuple[bytes, bytes]:
    """:func:`build_upstream_head` with positional arguments: the proxy calls this one, once
    per request (keyword arguments cost more, and a compiled build calls it in C)."""
    raw = head.raw
    line_end = head._line_end
    cut = head._cut
    host = head.host
    rid = head.request_id
    if rid is None:
        # (new_request_id(), inline: this runs per request)
        if request_id is not None:
            rid = request_id
        elif _RID is not None:
            rid = _RID(_prefix, next(_counter))
        else:
            rid = b"%s%012x" % (_prefix, next(_counter))
        added: bytes | None = rid
    else:
        added = None
    build = _BUILD
    if (
        build is not None
        and head._xff is None
        and head._origin_target is None
        and head.upgrade is None
        and head._cut_once
    ):
        # The common request (origin-form, no X-Forwarded-For to extend, no upgrade): in C.
        v11 = head.version == b"1.1"
        out = build(raw, head._low, line_end, cut, v11, host, client_ip, proto, added, via)
        if out is not None:
            return out, rid
    rid_line = b"" if added is None else b"\r\nX-Request-ID: " + added
    xff = client_ip if head._xff is None else b", ".join([*head._xff, client_ip])
    # What follows the original header lines. Joined from a tuple: the common shape is fixed.
    tail = (
        b"X-Forwarded-For: ",
        xff,
        b"\r\nX-Forwarded-Proto: ",
        proto,
        b"\r\nX-Forwarded-Host: " + host if host else b"",
        rid_line,
        b"\r\nVia: " + via if via is not None else b"",
        b"\r\nConnection: upgrade\r\n\r\n" if head.upgrade is not None else b"\r\n\r\n",
    )
    if head.version == b"1.1" and head._origin_target is None:
        if not cut:
            return b"".join((raw[:-2], *tail)), rid
        if len(cut) == 1 and head._cut_once:
            # The browser case: one line to drop (Connection: keep-alive), found once.
            low = head._low
            i = low.find(b"\r\n" + cut[0] + b":", line_end)
            j = low.find(b"\r\n", i + 2)
            return b"".join((raw[: i + 2], raw[j + 2 : -2], *tail)), rid
        pieces = [raw[: line_end + 2]]
    else:
        target = head.target if head._origin_target is None else head._origin_target
        pieces = [head.method, b" ", target, b" HTTP/1.1\r\n"]
        if head._origin_target is not None and host is not None:
            # Absolute-form: the target's authority is the host (RFC 9112 section 3.2.2).
            pieces.append(b"Host: " + host + b"\r\n")
    pieces += without_lines(raw, head._low, line_end, cut, head._cut_once)
    pieces += tail
    return b"".join(pieces), rid


def rewrite_response_head(
    head: ResponseHead, *, close: bool = False, extra: bytes = b"", http10_client: bool = False
) -> bytes:
    """The response head to send to the client.

    ``close``: this is the last response on the client connection, so say
    ``Connection: close`` (forced when ``head.close_delimited``; the adapter must close then
    too). ``extra``: preformatted header lines to add (``X-Request-ID``, a sticky
    ``Set-Cookie``; see :func:`header_line`). ``http10_client``: the client spoke HTTP/1.0, so a
    kept-alive connection needs an explicit ``Connection: keep-alive``.

    The status line is sent as HTTP/1.1 whatever the backend spoke. Connection, Keep-Alive,
    Proxy-Connection, Upgrade and headers named in Connection are dropped (a Connection header
    that only says keep-alive is kept while the connection stays open, which is the common case
    and then costs nothing). When nothing needs to change, ``head.raw`` itself is returned.
    """
    return client_response_head(head, close, extra, http10_client)


def client_response_head(
    head: ResponseHead, close: bool, extra: bytes, http10_client: bool
) -> bytes:
    """:func:`rewrite_response_head` with positional arguments (as
    :func:`upstream_request_head`)."""
    if not head._cut and head.version == b"1.1" and not head.close_delimited:
        if not close:
            if not http10_client or head._conn_keep_alive:
                # The common case (a keep-alive backend answering a keep-alive client; an
                # HTTP/1.0 one is told so by the backend's own Connection: keep-alive): the
                # head as received, plus the extra lines.
                return head.raw[:-2] + extra + b"\r\n" if extra else head.raw
        elif head._conn_keep_alive:
            # The last response on a client connection (Connection: close) from a keep-alive
            # backend: its one Connection line becomes ours.
            raw = head.raw
            low = head._low
            i = low.find(b"\r\nconnection:", head._line_end)
            j = low.find(b"\r\n", i + 2)
            return b"".join(
                (raw[: i + 2], raw[j + 2 : -2], b"Connection: close\r\n", extra, b"\r\n")
            )
    if head.status == 101:
        close = False  # the connection becomes a tunnel; its Connection/Upgrade lines stay
    elif head.close_delimited:
        close = True
    cut = head._cut
    conn_keep_alive = head._conn_keep_alive
    if close and conn_keep_alive:
        cut = (*cut, b"connection")
    if (
        not cut
        and head.version == b"1.1"
        and not close
        and not extra
        and (not http10_client or conn_keep_alive)
    ):
        return head.raw
    raw = head.raw
    line_end = head._line_end
    # A backend's HTTP/1.0 status line goes out as HTTP/1.1: we speak 1.1 to the client.
    pieces = (
        [raw[: line_end + 2]] if head.version == b"1.1" else [b"HTTP/1.1", raw[8 : line_end + 2]]
    )
    pieces += without_lines(raw, head._low, line_end, cut, head._cut_once)
    if close:
        pieces.append(b"Connection: close\r\n")
    elif http10_client and not conn_keep_alive:
        pieces.append(b"Connection: keep-alive\r\n")
    if extra:
        pieces.append(extra)
    pieces.append(b"\r\n")
    return b"".join(pieces)


def client_response_out(
    head: ResponseHead,
    close: bool,
    request_id: bytes,
    lines: bytes,
    http10_client: bool,
    body: bytes,
) -> bytes:
    """What the client gets for a response: :func:`client_response_head` with the extra
    lines ``X-Request-ID: request_id`` and ``lines`` (preformatted header lines: a sticky
    cookie, HSTS; or empty), followed by ``body``, as one bytes object, for one ``write``
    (a single buffer takes the event loop's direct write; two take a gathered one, which costs
    more per call than joining a small body).

    The common cases are one allocation: the head goes out as received, plus the lines; or,
    for the last response on a client connection, without the backend's ``Connection:
    keep-alive`` line (dropped by the offset the compiled scan found, ``head._conn_at``) and
    with ``Connection: close``."""
    if not head._cut and head.version == b"1.1":
        if not close:
            if not head.close_delimited and (not http10_client or head._conn_keep_alive):
                splice = _OUT
                if splice is not None:
                    return splice(head.raw, request_id, lines, b"", body)
                return b"".join(
                    (head.raw[:-2], b"X-Request-ID: ", request_id, b"\r\n", lines, b"\r\n", body)
                )
        elif head.status != 101 and (head._conn_at or not head._conn_keep_alive):
            # (101: its Connection and Upgrade lines stay; see client_response_head)
            last = _OUT_CLOSE
            if last is not None:
                return last(head.raw, head._conn_at, request_id, lines, body)
            raw = head.raw
            i = head._conn_at
            return b"".join(
                (
                    raw[:i] if i else raw[:-2],
                    raw[raw.find(b"\r\n", i) + 2 : -2] if i else b"",
                    b"Connection: close\r\nX-Request-ID: ",
                    request_id,
                    b"\r\n",
                    lines,
                    b"\r\n",
                    body,
                )
            )
    out = client_response_head(
        head, close, b"".join((b"X-Request-ID: ", request_id, b"\r\n", lines)), http10_client
    )
    return out + body if body else out


def replace_header(head: bytes, name: bytes, value: bytes | None) -> bytes:
    """``head`` (a whole head, ending in an empty line) without any ``name`` line, and with
    ``name: value`` added when ``value`` is given: a header only the proxy may set (the mTLS
    subject), whatever the client sent. Not on the common path: only listeners that set such
    a header call it."""
    low = head.lower()
    key = b"\r\n" + name.lower() + b":"
    i = low.find(key)
    while i >= 0:
        j = low.find(b"\r\n", i + 2)
        head = head[:i] + head[j:]
        low = low[:i] + low[j:]
        i = low.find(key)
    if value is not None:
        head = head[:-2] + name + b": " + value + b"\r\n\r\n"
    return head

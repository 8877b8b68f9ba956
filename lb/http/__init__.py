"""Sans-IO HTTP/1.1 for the L7 proxy, on httptools (llhttp).

This package owns HTTP framing, limits, smuggling checks and head rewriting. It never touches a
socket, a transport or an event loop: bytes go in, handler callbacks and bytes come out, so all of
it is tested with plain bytes (``tests/unit/test_http_*.py``). The asyncio adapters in
``lb/proxy/`` move bytes between transports and these objects.

* :class:`RequestParser` (client side): request heads, raw body bytes, end of request, errors
  with their status; pauses after each request so pipelined requests wait their turn.
* :func:`build_upstream_head`: the head to send to the backend (hop-by-hop headers dropped,
  X-Forwarded-*, X-Request-ID).
* :class:`ResponseParser` (upstream side): where each response ends, whether the connection may
  be reused, HEAD/1xx/204/304/101 and close-delimited framing.
* :func:`rewrite_response_head`: the head to send to the client (Connection, extra headers).
* :func:`error_response`: the proxy's own preformatted error responses.

How an adapter drives it (one client connection, one request at a time)::

    client data_received(data)  -> request_parser.feed(data)
      on_request_head(head)     -> pick a backend; upstream_head, rid = build_upstream_head(...)
                                   response_parser.start(head_request=head.method == b"HEAD",
                                       upgrade=head.upgrade is not None,
                                       dechunk=head.version == b"1.0")
                                   upstream.write(upstream_head)
      on_request_body(data)     -> upstream.write(data)        (raw; framing already right)
      on_request_end()          -> request fully sent; the parser is paused
      on_request_error(st, why) -> write error_response(st, why); close
    upstream data_received(data) -> response_parser.feed(data)
      on_response_interim(h)    -> client.write(h.raw) unless the client is HTTP/1.0
      on_response_head(h)       -> client.write(rewrite_response_head(h, close=..., extra=...))
      on_response_body(data)    -> client.write(data)
      on_response_end(reusable) -> pool or close upstream; close the client if it asked to, or
                                   if h.close_delimited; else request_parser.resume()
      on_response_upgrade(data) -> client.write(data); tail = request_parser.detach();
                                   upstream.write(tail); become an L4 relay
      on_response_error(why)    -> 502 if nothing was sent to the client yet, else close it

Collect what the callbacks of one ``feed`` produce and send it with one ``writelines``: uvloop
writes immediately when its buffer is empty, so a head and a body written separately cost two
syscalls.

What to know about httptools 0.9 (why the design is what it is): it exposes no ``pause()`` (llhttp
has ``llhttp_pause``; the wrapper does not bind it), no offset at which a message ended (only the
offset after an upgrade, through ``HttpParserUpgrade``), no Content-Length or chunked flag, and
``on_headers_complete`` cannot return 1 to say "no body" (the wrapper returns 1 only for upgrades),
so it cannot frame a response to HEAD. Its ``on_body`` hands out decoded copies. And llhttp has no
size limits. Hence: llhttp validates heads only, the framing and limits are ours, and bodies are
forwarded as the raw bytes received. In its default strict mode llhttp rejects obs-fold, bare CR
or LF, whitespace before a colon, duplicate Content-Length, Content-Length with
Transfer-Encoding, and (in requests) a Transfer-Encoding that does not end with chunked; it does
accept HTTP/0.9 and HTTP/2.0 request lines, RTSP/ICE protocols, status codes outside 100-599 and
``#`` in targets, which we reject ourselves. It raises ``HttpParserUpgrade`` after an upgrade
request or a 101 with Upgrade headers, but a plain ``HttpParserError("Pause on CONNECT/Upgrade")``
after a 101 without them.
"""

from lb.http.chunked import ChunkedFramer, FramingError
from lb.http.errors import CONTINUE_100, REASON_PHRASES, error_response
from lb.http.heads import RequestHead, ResponseHead
from lb.http.request import DEFAULT_LIMITS, RequestHandler, RequestLimits, RequestParser
from lb.http.response import ResponseHandler, ResponseParser
from lb.http.rewrite import build_upstream_head, header_line, new_request_id, rewrite_response_head

__all__ = [
    "CONTINUE_100",
    "DEFAULT_LIMITS",
    "REASON_PHRASES",
    "ChunkedFramer",
    "FramingError",
    "RequestHandler",
    "RequestHead",
    "RequestLimits",
    "RequestParser",
    "ResponseHandler",
    "ResponseHead",
    "ResponseParser",
    "build_upstream_head",
    "error_response",
    "header_line",
    "new_request_id",
    "rewrite_response_head",
]

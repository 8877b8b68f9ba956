"""Preformatted error responses that the proxy sends on its own behalf.

Responses built here close the connection (``Connection: close``): after a parse error the byte
stream can no longer be trusted, and after 502/504 the proxy gives up on the exchange. A 503 for
a full queue may keep it (``close=False``).
Responses are cached per (status, reason, retry_after, body), so the hot path pays one dict lookup.
"""

from __future__ import annotations

from functools import lru_cache

REASON_PHRASES: dict[int, str] = {
    100: "Continue",
    101: "Switching Protocols",
    200: "OK",
    204: "No Content",
    304: "Not Modified",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    413: "Content Too Large",
    414: "URI Too Long",
    417: "Expectation Failed",
    421: "Misdirected Request",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
    505: "HTTP Version Not Supported",
}

#: What the proxy sends itself when it answers ``Expect: 100-continue`` locally.
CONTINUE_100 = b"HTTP/1.1 100 Continue\r\n\r\n"

_MAX_REASON = 200


def _clean(text: str) -> str:
    """Printable ASCII only, so a reason can never break the response framing."""
    text = text[:_MAX_REASON]
    if text.isascii() and text.isprintable():
        return text
    return "".join(c if " " <= c <= "~" else "?" for c in text)


@lru_cache(maxsize=1024)
def error_response(
    status: int,
    reason: str = "",
    retry_after: int | None = None,
    *,
    body: bool = True,
    close: bool = True,
) -> bytes:
    """A complete ``HTTP/1.1`` error response with ``Connection: close`` and a short text body.

    ``reason`` is a short human explanation (``"missing Host header"``) appended to the body; it
    must be one of the proxy's own strings, never a value copied from a request. ``retry_after``
    (seconds) adds ``Retry-After``, meant for 503. ``body=False`` keeps ``Content-Length`` but
    omits the body, for answers to ``HEAD`` requests. ``close=False`` leaves the connection
    open (a 503 from a full queue: the request was read whole, the stream is in step).
    """
    phrase = REASON_PHRASES.get(status, "Error")
    text = f"{status} {phrase}: {_clean(reason)}\n" if reason else f"{status} {phrase}\n"
    payload = text.encode("ascii")
    lines = [
        f"HTTP/1.1 {status} {phrase}",
        "Content-Type: text/plain; charset=utf-8",
        f"Content-Length: {len(payload)}",
        "Cache-Control: no-cache",
    ]
    if close:
        lines.append("Connection: close")
    if retry_after is not None:
        lines.append(f"Retry-After: {int(retry_after)}")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")
    return head + payload if body else head

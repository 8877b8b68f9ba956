"""The thin layer over httptools shared by the request and response parsers.

llhttp only ever sees message *heads* here. The parsers find the end of a head themselves
(the first CRLFCRLF; llhttp in its default strict mode rejects bare LF, obs-fold and whitespace
before the colon, so it agrees on where a head ends) and feed llhttp exactly those bytes, possibly
in several pieces while the head trickles in. llhttp validates the syntax (methods, target
characters, token names, value characters, version, duplicate Content-Length, Content-Length with
Transfer-Encoding, ...); bodies are framed by the parsers themselves (see
:mod:`lb.http.chunked`), because httptools cannot report the offset at which a message ends and
cannot pause.

So after a head with a body llhttp waits for a body it will never get: the parsers replace it with
a fresh one (``message_complete`` false). That costs about 0.2 us, only for messages with bodies.

Because llhttp has validated the head, the parsers can read header fields straight from the raw
bytes: in a lowercased copy, ``CRLF name ":"`` matches exactly the header lines called ``name``
(no folding, no whitespace before the colon, no CR or LF inside values or the request line).

The callback object is separate from the parser so that no reference cycle exists between the
parser, httptools and the handler (the connection is freed by refcounting, not by the GC).
"""

from __future__ import annotations


class Collector:
    """httptools callback target: only notes where llhttp thinks a message's parts end.

    Header fields are not reported through ``on_header``: a Python callback per field costs more
    (about 0.15 us each) than extracting the few headers the proxy needs from the validated raw
    head with one regular expression; see the parsers.
    """

    __slots__ = ("headers_complete", "message_complete")

    def __init__(self) -> None:
        self.headers_complete = False
        self.message_complete = False

    def on_headers_complete(self) -> None:
        self.headers_complete = True

    def on_message_complete(self) -> None:
        self.message_complete = True


def error_text(exc: BaseException) -> str:
    """llhttp's own reason (a constant C string such as "Invalid header value char")."""
    text = str(exc.args[0]) if exc.args else type(exc).__name__
    return text[:100]


class Quiet:
    """httptools callback target with no callbacks at all, for the parsers' fast paths: there
    the compiled scan has framed the head already, and llhttp only validates it (it raises on
    anything invalid). A complete head that llhttp accepts has reached headers-complete."""

    __slots__ = ()

"""The framing both HTTP/1.1 parsers share: stepping through heads and bodies.

Theory of operation
-------------------
A message on the wire is a head, ended by the first CRLFCRLF, then a body framed by
Content-Length or by the chunked coding (responses may also run until the connection closes).
The request and response parsers differ in what a head *means* (what is valid, how its body is
framed, what the end of a message does to the connection), never in how the bytes are stepped
through. :class:`MessageParser` is that stepping, once; each parser subclasses it and says what a
head means through a few hooks:

* ``_head_step`` collects one head. While the head trickles in, its bytes are buffered, the
  subclass bounds the buffer (``_head_limits``) and llhttp checks each new piece, so garbage is
  refused at once rather than at a timeout. A complete head goes to ``_complete_head``, which
  reads it (``_feed_head`` hands it to llhttp when the compiled scan did not take it) and says
  where stepping goes on.
* ``_body_step`` frames a body with exact offsets, never through llhttp: a count of bytes for
  Content-Length (``_expect_body(length, None)``), a :class:`ChunkedFramer` for the chunked
  coding. The bytes go to ``on_body`` raw (decoded instead when ``_out`` collects the payload, as
  the response side does for HTTP/1.0 clients); the subclass counts them (``_count_body``) and
  says what the end of the message does (``_message_end``).
* Errors go to ``_bad_head`` (llhttp's words about a head) and ``_bad_body`` (the chunked
  framer's), which say them in the subclass's terms.

``_state`` is the subclass's: this machinery reads only ``HEAD`` and ``BODY`` (``_steps`` goes on
while the state is one of them; a callback may move it on, which ends the step) and never sets it
except to ``BODY``. The functions below read the header fields both directions frame by.

Why a base class with hooks: compiled (``framing.pxd``), every method here and every hook is a C
call through the class's vtable, so sharing costs the compiled path nothing; in plain Python each
is a Python call, which the reference implementation can afford.

Never does: I/O, limits, error texts, or anything a head means.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httptools

from lb.http._llhttp import Collector, error_text
from lb.http.chunked import ChunkedFramer, FramingError

#: States both parsers have; each adds its own after ``DEAD``.
HEAD = 0
BODY = 1
DEAD = 2

#: ``_cb`` of a parser that has not needed llhttp with callbacks yet (most connections never
#: do): making a ``Collector`` per connection is a good part of what a new connection costs.
_UNUSED = Collector()


def ignore(*args: object) -> None:
    """A callback that takes anything and does nothing: a parser's callback before it is
    bound, or after its handler is gone."""


class MessageParser:
    """Steps through the heads and bodies of one connection's messages; subclass it (see the
    module docstring). ``ll_class`` is httptools' request or response parser class,
    ``on_body`` the handler's body callback, ``state`` the state to start in."""

    __slots__ = (
        "_buf",
        "_cb",
        "_fed",
        "_framer",
        "_ll",
        "_ll_class",
        "_ll_clean",
        "_on_body",
        "_out",
        "_remaining",
        "_state",
    )

    def __init__(
        self,
        ll_class: type[httptools.HttpRequestParser] | type[httptools.HttpResponseParser],
        on_body: Callable[[bytes], None],
        state: int,
    ) -> None:
        self._setup(ll_class, on_body, state)

    def _setup(
        self,
        ll_class: type[httptools.HttpRequestParser] | type[httptools.HttpResponseParser],
        on_body: Callable[[bytes], None],
        state: int,
    ) -> None:
        """What ``__init__`` does. Compiled, a subclass's ``__init__`` calls this in C, where
        calling ``MessageParser.__init__`` would be a Python call (it runs per connection)."""
        self._ll_class = ll_class
        self._on_body = on_body
        self._state = state
        # llhttp's callback target, made with the llhttp parser that reports to it (_general);
        # until then the shared, never-fed ``_UNUSED``.
        self._cb = _UNUSED
        # llhttp with callbacks, for heads the compiled scan does not take; ``_ll_clean`` says
        # it is at the start of a message (it is not after a head with a body: see _feed_head).
        # Made when first needed (``_general``): most connections never need it, and making
        # one is a good part of what a new connection costs.
        self._ll: Any = None  # (an instance of ll_class)
        self._ll_clean = True
        self._buf = bytearray()
        self._fed = 0  # bytes of _buf that llhttp has seen
        self._remaining = 0  # Content-Length body bytes still to come
        self._framer: ChunkedFramer | None = None
        self._out: list[bytes] | None = None

    def _steps(self, data: bytes, pos: int) -> int:
        """Steps through ``data[pos:]`` while a head or a body is expected; returns where it
        stopped: ``len(data)``, or where the subclass's own state (or ``DEAD``) began."""
        n = len(data)
        while pos < n:
            state = self._state
            if state == HEAD:
                pos = self._head_step(data, pos)
            elif state == BODY:
                pos = self._body_step(data, pos)
            else:
                break
        return pos

    # -- heads ---------------------------------------------------------------------------------

    def _begin_head(self) -> None:
        """A new head starts: llhttp must be at the start of a message."""
        if not self._ll_clean:
            self._ll = None  # (a fresh one when needed)
            self._ll_clean = True
        cb = self._cb
        if cb is not _UNUSED:
            cb.headers_complete = cb.message_complete = False
        self._fed = 0

    def _head_step(self, data: bytes, pos: int) -> int:
        """Consume head bytes from ``data[pos:]``; returns where stepping goes on."""
        buf = self._buf
        if not buf:
            c = data[pos]
            if c == 13 or c == 10:
                # Empty lines before a start line are ignored (RFC 9112 section 2.2).
                n = len(data)
                while pos < n and data[pos] in b"\r\n":
                    pos += 1
                if pos == n:
                    return n
            self._begin_head()
            end = data.find(b"\r\n\r\n", pos)
            if end < 0:
                buf += data[pos:] if pos else data
                self._partial_head()
                return len(data)
            end += 4
            raw = data if pos == 0 and end == len(data) else data[pos:end]
            return self._complete_head(raw, data, end)
        old = len(buf)
        buf += data[pos:] if pos else data
        end = buf.find(b"\r\n\r\n", old - 3 if old > 3 else 0)
        if end < 0:
            self._partial_head()
            return len(data)
        end += 4
        raw = bytes(buf[:end])
        buf.clear()
        return self._complete_head(raw, data, pos + end - old)

    def _general(self) -> Any:
        """The llhttp parser with callbacks (made on first use)."""
        ll = self._ll
        if ll is None:
            cb = self._cb
            if cb is _UNUSED:
                cb = self._cb = Collector()
            ll = self._ll = self._ll_class(cb)
        return ll

    def _partial_head(self) -> None:
        """Part of a head is buffered: bound it, and let llhttp see what is new."""
        if not self._head_limits():
            return
        buf = self._buf
        chunk = bytes(buf[self._fed :])
        self._fed = len(buf)
        try:
            self._general().feed_data(chunk)
        except httptools.HttpParserError as exc:
            self._bad_head(error_text(exc))

    def _feed_head(self, raw: bytes, paused_ok: bool) -> int:
        """Give llhttp the rest of the complete head ``raw``. Returns 1 when llhttp took it as
        an upgrade, 0 when it took it, and -1 when it refused it (said through ``_bad_head``).
        ``paused_ok``: an error once llhttp has completed the message is its pause after a
        ``101``, which it makes even without Upgrade headers.

        Whether llhttp reached the end of the head is in ``self._cb.headers_complete``."""
        ll = self._general()
        cb = self._cb  # (made with ll)
        fed = self._fed
        upgraded = 0
        try:
            ll.feed_data(raw[fed:] if fed else raw)
        except httptools.HttpParserUpgrade:
            upgraded = 1
        except httptools.HttpParserError as exc:
            if not (paused_ok and cb.message_complete):
                self._bad_head(error_text(exc))
                return -1
        # llhttp waits for a body it will never see: a fresh one for the next message.
        self._ll_clean = cb.message_complete
        return upgraded

    # -- bodies --------------------------------------------------------------------------------

    def _expect_body(self, length: int, framer: ChunkedFramer | None) -> None:
        """A body follows: ``length`` bytes, or what ``framer`` (chunked) finds."""
        self._framer = framer
        self._remaining = length
        self._state = BODY

    def _body_step(self, data: bytes, pos: int) -> int:
        """Consume body bytes from ``data[pos:]``; returns where stepping goes on."""
        framer = self._framer
        n = len(data)
        if framer is None:
            remaining = self._remaining
            if n - pos < remaining:
                self._remaining = remaining - (n - pos)
                self._count_body(n - pos)
                self._on_body(data[pos:] if pos else data)
                return n
            end = pos + remaining
            self._remaining = 0
            self._count_body(remaining)
            self._on_body(data if pos == 0 and end == n else data[pos:end])
        else:
            out = self._out
            try:
                end = framer.consume(data, pos, out)
            except FramingError as exc:
                self._bad_body(exc)
                return n
            if end > pos:
                self._count_body(end - pos)
                if out is None:
                    self._on_body(data if pos == 0 and end == n else data[pos:end])
                else:
                    for piece in out:
                        self._on_body(piece)
                    out.clear()
            if not framer.done:
                return end
            self._framer = None
        if self._state != BODY:
            return n  # a callback closed us
        return self._message_end(end, n)

    def passes(self, n: int) -> bool:
        """Are the next ``n`` bytes from the wire all body bytes that need no framing work:
        within a Content-Length body (they may end it), or within one chunk's data (they do
        not reach its CRLF), with nothing to decode?"""
        if self._state != BODY:
            return False
        framer = self._framer
        if framer is None:
            return n <= self._remaining
        return self._out is None and framer.data_left() > n

    def pass_on(self, data: Any, n: int) -> None:
        """Hands on ``data`` (``n`` bytes, any buffer: a ``memoryview`` of the read buffer),
        which :meth:`passes` said is all body, as it is: counted, not copied, not sliced.
        A Content-Length body that ends here ends the message (with nothing after it)."""
        framer = self._framer
        self._count_body(n)
        if framer is not None:
            framer.skip(n)
            self._on_body(data)
            return
        remaining = self._remaining - n
        self._remaining = remaining
        self._on_body(data)
        if remaining == 0 and self._state == BODY:
            self._message_end(n, n)

    # -- what the subclass says ----------------------------------------------------------------

    def _complete_head(self, raw: bytes, data: bytes, end: int) -> int:
        """``raw`` is a complete head, and ``data[end:]`` what follows it: read it, hand it on,
        and return where stepping goes on (``len(data)`` when it is over)."""
        raise NotImplementedError

    def _head_limits(self) -> bool:
        """Part of a head is in ``_buf``: false (after failing) if it is already too large."""
        raise NotImplementedError

    def _bad_head(self, text: str) -> None:
        """llhttp refused a head, in these words: fail."""
        raise NotImplementedError

    def _bad_body(self, exc: FramingError) -> None:
        """The chunked framer refused a body: fail."""
        raise NotImplementedError

    def _count_body(self, n: int) -> None:
        """``n`` more body bytes arrived on the wire."""
        raise NotImplementedError

    def _message_end(self, end: int, n: int) -> int:
        """The body ended at ``data[end]`` (``n`` is ``len(data)``): the message is complete.
        Returns where stepping goes on."""
        raise NotImplementedError


def content_length(value: bytes) -> int:
    """The value of a Content-Length header (leading whitespace already gone), or -1 if it is
    not a plain decimal count of at most 18 digits."""
    value = value.rstrip(b" \t")
    if not value.isdigit() or len(value) > 18:
        return -1
    return int(value)


def keep_alive_option(tokens: list[bytes], keep_alive: bool) -> bool:
    """Whether the Connection ``tokens`` (lowercase) let the connection stay open;
    ``keep_alive`` is what the version says when they say nothing."""
    if b"close" in tokens:
        return False
    if b"keep-alive" in tokens:
        return True
    return keep_alive


def cut_connection_options(
    tokens: list[bytes], low: bytes, cut: list[bytes], keep: frozenset[bytes]
) -> bool:
    """Adds to ``cut`` the header fields the Connection ``tokens`` name as hop-by-hop, except
    those in ``keep`` (keywords, and the headers the proxy owns: a peer must not strip the
    framing), when the lowercased head ``low`` has them. True if it added any."""
    added = False
    for token in set(tokens) - keep:
        if token not in cut and b"\r\n" + token + b":" in low:
            cut.append(token)
            added = True
    return added

"""Chunked transfer coding (RFC 9112 section 7.1), framed with exact byte offsets.

llhttp (through httptools) decodes chunked bodies but cannot say at which byte of a buffer a
message ended, and it hands out decoded copies. The proxy needs the opposite: forward the raw
bytes untouched and know exactly where the message stops, so that pipelined bytes behind it are
held back and stray bytes from a backend are noticed. So bodies never go through llhttp: this
framer walks the wire format itself and returns offsets.

It is strict, because a framer that is more lenient than the peer behind it is how request
smuggling works: the size is 1-16 hex digits with nothing in front (no ``0x``, ``+``, ``_`` or
spaces, all of which ``int(x, 16)`` would take), every line ends in CRLF (a bare LF or CR is an
error), chunk data is followed by exactly CRLF, extensions and trailer fields may not contain
control characters, and trailer lines may not be folded. Size lines and the trailer section are
bounded so a peer cannot make us buffer without limit.

The framer only reads; it never copies payload except when a caller asks for the decoded payload
(``out``), which the response side uses to de-chunk for HTTP/1.0 clients.
"""

from __future__ import annotations

_HEX = b"0123456789abcdefABCDEF"
#: Token characters (RFC 9110 section 5.6.2), for trailer field names.
TOKEN_CHARS = b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
#: Visible ASCII, SP, HTAB and obs-text: what a field value or chunk extension may contain.
VALUE_CHARS = bytes(range(0x20, 0x7F)) + b"\t" + bytes(range(0x80, 0x100))

_SIZE = 0
_DATA = 1
_DATA_CR = 2
_DATA_LF = 3
_TRAILER = 4
_DONE = 5

_MAX_HEX_DIGITS = 16
# The largest chunk size passed on: 4 PiB, beyond any real body and far below where a 64-bit
# parser overflows. lb forwards size lines as they came, so a size that a backend reads
# differently (negative, wrapped) would desynchronise the two (HAProxy refuses these too).
MAX_CHUNK_SIZE = 2**52 - 1


class FramingError(Exception):
    """A message breaks HTTP/1.1 or a limit: ``reason`` says how, ``status`` what a client gets
    for it. Raised by the chunked framer (a body that is not valid chunked coding: 400; too
    large: 413) and by the parsers' head readers (:func:`lb.http.request.read_request_head`,
    :func:`lb.http.response.read_response_head`, where a response's status is not used)."""

    def __init__(self, reason: str, status: int = 400) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


class ChunkedFramer:
    """Walks one chunked body; feed it consecutive buffers through :meth:`consume`.

    ``payload_bytes`` counts decoded payload (what ``max_payload`` limits); ``done`` turns true
    once the last chunk and the trailer section have been read.
    """

    __slots__ = (
        "_crlf_line",
        "_line",
        "_max_line",
        "_max_payload",
        "_max_trailer",
        "_remaining",
        "_state",
        "_trailer_bytes",
        "done",
        "payload_bytes",
    )

    def __init__(
        self, max_payload: int | None = None, max_line: int = 4096, max_trailer: int = 32768
    ) -> None:
        self._state = _SIZE
        self._remaining = 0
        self._line = b""
        self._crlf_line = 0
        self._max_payload = max_payload
        self._max_line = max_line
        self._max_trailer = max_trailer
        self._trailer_bytes = 0
        self.payload_bytes = 0
        self.done = False

    def consume(self, data: bytes, pos: int = 0, out: list[bytes] | None = None) -> int:
        """Frame ``data[pos:]``; return the offset just past the body, or ``len(data)``.

        When the returned offset is less than ``len(data)``, ``done`` is true and the remaining
        bytes belong to whatever follows the message. With ``out``, the decoded payload slices
        are appended to it. Raises :class:`FramingError` on malformed input.
        """
        n = len(data)
        state = self._state
        while pos < n:
            if state == _DATA:
                remaining = self._remaining
                if n - pos < remaining:
                    if out is not None:
                        out.append(data[pos:] if pos else data)
                    self._remaining = remaining - (n - pos)
                    self._state = state
                    return n
                end = pos + remaining
                if out is not None:
                    out.append(data[pos:end])
                self._remaining = 0
                pos = end
                if data.startswith(b"\r\n", pos):
                    pos += 2
                    state = _SIZE
                else:
                    state = _DATA_CR
            elif state in (_DATA_CR, _DATA_LF):
                expected = 13 if state == _DATA_CR else 10
                if data[pos] != expected:
                    self._state = _DONE
                    raise FramingError("chunk data not followed by CRLF")
                pos += 1
                state = _DATA_LF if state == _DATA_CR else _SIZE
            elif state in (_SIZE, _TRAILER):
                lf = data.find(b"\n", pos)
                if lf < 0:
                    self._line += data[pos:]
                    if len(self._line) > self._max_line:
                        raise FramingError("chunk line too long")
                    self._state = state
                    return n
                line = data[pos : lf + 1]
                if self._line:
                    line = self._line + line
                    self._line = b""
                pos = lf + 1
                if len(line) > self._max_line:
                    raise FramingError("chunk line too long")
                if line[-2:-1] != b"\r":
                    raise FramingError("bare LF in chunked body")
                line = line[:-2]
                if state == _SIZE:
                    size = _parse_size(line)
                    if size == 0:
                        state = _TRAILER
                    else:
                        self.payload_bytes += size
                        if self._max_payload is not None and self.payload_bytes > self._max_payload:
                            raise FramingError("request body too large", 413)
                        self._remaining = size
                        state = _DATA
                elif line:
                    self._trailer_bytes += len(line) + 2
                    if self._trailer_bytes > self._max_trailer:
                        raise FramingError("trailer section too large")
                    _check_trailer(line)
                else:
                    self._state = _DONE
                    self.done = True
                    return pos
            else:
                # _DONE: nothing after the message belongs to it.
                return pos
        self._state = state
        return n

    def data_left(self) -> int:
        """Bytes of the current chunk's data still to come (0 outside chunk data): that many
        bytes can be passed on with :meth:`skip`, not fed, as long as a read stops short of
        the CRLF after them."""
        return self._remaining if self._state == _DATA else 0

    def skip(self, n: int) -> None:
        """``n`` bytes of chunk data went by (``n < data_left()``): count them, nothing else."""
        self._remaining -= n


def _parse_size(line: bytes) -> int:
    semi = line.find(b";")
    digits = line if semi < 0 else line[:semi]
    if not digits or len(digits) > _MAX_HEX_DIGITS or digits.translate(None, _HEX):
        raise FramingError("invalid chunk size")
    if semi >= 0 and line.translate(None, VALUE_CHARS):
        raise FramingError("invalid chunk extension")
    size = int(digits, 16)
    if size > MAX_CHUNK_SIZE:
        raise FramingError("chunk size too large")
    return size


def _check_trailer(line: bytes) -> None:
    name, sep, value = line.partition(b":")
    if not sep or not name or name.translate(None, TOKEN_CHARS):
        raise FramingError("invalid trailer field")
    if value.translate(None, VALUE_CHARS):
        raise FramingError("invalid trailer field value")

"""Server-side TLS for one client connection: our own layer between uvloop's TCP transport and
the connection's protocol, in place of uvloop's ``SSLProtocol``.

Owns: the connection's ``ssl.SSLObject`` and its two memory BIOs, the handshake (its timeout,
and counting it by version, resumption or failure reason on the listener's
``EdgeCounters``), decrypting what the socket delivers into the app's ``data_received``,
encrypting what the app writes into the socket, flow control both ways, and ``close_notify``.

Never does: buffer plaintext or ciphertext of its own (the socket transport's buffer is the
one write buffer, and the incoming BIO holds only what the socket delivered while the app had
reading paused), log per connection, or know HTTP.

Theory of operation
-------------------
One :class:`TlsConnection` is both the protocol uvloop drives for the socket and the
transport the app (``HttpClientProtocol``, ``TcpClientProtocol``) writes to; the two roles
have no method name in common. It starts in ``HANDSHAKE``: the bytes the socket delivers go
into the incoming BIO and ``do_handshake`` runs until it completes; what OpenSSL writes meanwhile
(ServerHello and certificate, alerts) goes to the socket at once. The default certificate's
context starts every connection; its SNI callback (``lb.tls.ServerTls``) switches to the
certificate that has the name. A completed handshake is counted, the state becomes ``OPEN``
and the app gets ``connection_made(self)``. A failed one is counted by reason
(``lb.tls.failure_reason``), its alert is sent, and the socket is closed; the app never hears
of the connection. So is one that outlasts ``handshake_timeout``, or that the client closes.

What OpenSSL writes when a TLS 1.3 handshake completes is only the session tickets (TLS 1.2
puts them inside the handshake, before the server's Finished, which is sent at once). They are
``held`` back in the outgoing BIO and go with the first write, in the same ``send`` as the
first response, or with ``close``'s ``close_notify``; the handshake timer then stays armed, and
if nothing was written when it fires (``handshake_timeout`` after the connection came), it
sends them alone. A ``Connection: close`` exchange thus takes one ``send`` fewer (HAProxy
writes the tickets on their own). With TLS 1.2, or nothing held, the timer is cancelled at
once.

``OPEN``: each read from the socket is written into the incoming BIO, then records are
decrypted one by one into ``app.data_received`` while the app has not paused reading. The
loop ends without an exception when neither the BIO nor OpenSSL holds another byte.
The common case, one request in one record in one read, takes a shorter way: when the last
read left nothing behind (``drained``) and the bytes the socket delivered are exactly one
whole record (its header's length says so), one ``read`` sized to that record (larger than
any plaintext it can hold, so it takes the record whole) decrypts it; no ``pending`` calls
and no 16 KiB buffer allocated and shrunk per record. A completed handshake leaves the
connection drained, and a first request that came in the same read as the client's Finished
takes the same way when it is one whole record (the end of that read, by its header).
``pause_reading`` pauses the socket too and leaves undecrypted records in the BIO;
``resume_reading`` resumes the socket and decrypts them on the next loop iteration (never
inside the app's own call). A
``close_notify`` from the client (or a FIN) is ``eof_received`` for the app; it may keep the
connection open to finish a response.

Writes are encrypted at once and handed to the socket transport: ``writelines`` joins its
parts first, so a response head and a small body become one TLS record and one ``send``.
The socket transport's buffer does the write flow control: its ``pause_writing`` and
``resume_writing`` are passed to the app, and ``get_write_buffer_size`` is its size (of
ciphertext, a few bytes per record above the plaintext).

``close`` sends ``close_notify`` (after what is buffered) and closes the socket without
waiting for the client's own ``close_notify``, as HAProxy and nginx do; ``abort`` drops the
socket at once. The app hears ``connection_lost`` when the socket is gone.

Where a C compiler is there, setup.py compiles this module with Cython, with the class layout
in ``tlsconn.pxd`` next to it (docs/architecture.md, "The compiled fast path").
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any, Protocol, cast

from lb.tls import failure_reason

# states
HANDSHAKE = 0  # the app does not know of the connection yet
OPEN = 1  # the app has it, and reads
DONE = 2  # the app has it; nothing more to read (close_notify, FIN, or a bad record)
REFUSED = 3  # the handshake failed or timed out: the app never had it

# SSL_read returns at most one record (16 KiB of plaintext) per call.
READ_SIZE = 16384
# A TLS record: a 5-byte header (type, version, length of what follows) and the rest.
RECORD_HEADER = 5

_WantRead = ssl.SSLWantReadError
_SSLError = ssl.SSLError
_MemoryBIO = ssl.MemoryBIO


class TlsApp(Protocol):
    """What the connection needs of the protocol above it."""

    def connection_made(self, transport: Any) -> None: ...

    def data_received(self, data: bytes) -> None: ...

    def eof_received(self) -> bool | None: ...

    def connection_lost(self, exc: Exception | None) -> None: ...

    def pause_writing(self) -> None: ...

    def resume_writing(self) -> None: ...


class TlsCounters(Protocol):
    """The listener's counters this connection adds to (``lb.proxy.edge.EdgeCounters``)."""

    handshakes: dict[str, int]
    resumed: int
    failures: dict[str, int]


class TlsConnection:
    """One TLS client connection (see the module docstring)."""

    __slots__ = (
        "app",
        "closing",
        "counters",
        "drained",
        "held",
        "incoming",
        "loop",
        "outgoing",
        "read_paused",
        "reading_scheduled",
        "ssl",
        "sslobj",
        "state",
        "timeout",
        "timer",
        "transport",
        "write_paused",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        app: TlsApp,
        context: ssl.SSLContext,
        counters: TlsCounters,
        handshake_timeout: float,
    ) -> None:
        self.loop = loop
        self.app = app
        self.counters = counters
        self.timeout = handshake_timeout
        self.incoming = _MemoryBIO()
        self.outgoing = _MemoryBIO()
        self.sslobj: Any = context.wrap_bio(self.incoming, self.outgoing, server_side=True)
        # The C object under the SSLObject: its read/write/pending without the Python-level
        # wrappers of ssl.py (a frame each, on every record).
        self.ssl: Any = getattr(self.sslobj, "_sslobj", self.sslobj)
        self.transport: Any = None
        self.timer: asyncio.TimerHandle | None = None
        self.state = HANDSHAKE
        self.read_paused = False
        self.reading_scheduled = False
        self.write_paused = False
        self.closing = False
        # The last read left no byte in the incoming BIO or in OpenSSL, and none came since.
        self.drained = False
        # Bytes in the outgoing BIO held back for the next write: TLS 1.3 session tickets.
        self.held = 0

    # -- the socket's protocol ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.timer = self.loop.call_later(self.timeout, self._handshake_timeout)

    def data_received(self, data: bytes) -> None:
        self.incoming.write(data)
        state = self.state
        if state == OPEN:
            if self.read_paused:
                self.drained = False
            elif self.drained:
                size = len(data)
                if size > RECORD_HEADER and size == RECORD_HEADER + (data[3] << 8 | data[4]):
                    self._read_record(size)
                else:
                    self._read()
            else:
                self._read()
        elif state == HANDSHAKE:
            self._handshake(data)

    def eof_received(self) -> bool:
        state = self.state
        if state == HANDSHAKE:
            self._handshake_failed(ConnectionResetError("the client closed during the handshake"))
            return False
        if state == OPEN:
            self.state = DONE
            return bool(self.app.eof_received())
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        timer = self.timer
        if timer is not None:
            timer.cancel()
            self.timer = None
        state = self.state
        self.closing = True
        if state == HANDSHAKE:
            self.state = REFUSED
            self.counters.failures[failure_reason(exc)] += 1
        elif state != REFUSED:
            self.state = DONE
            self.app.connection_lost(exc)

    def pause_writing(self) -> None:
        self.write_paused = True
        if self.state == OPEN or self.state == DONE:
            self.app.pause_writing()

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.state == OPEN or self.state == DONE:
            self.app.resume_writing()

    # -- the handshake -------------------------------------------------------------------------

    def _handshake(self, data: bytes) -> None:
        """Go on with the handshake, ``data`` being the bytes the socket just delivered."""
        sslobj = self.ssl
        try:
            sslobj.do_handshake()
        except _WantRead:
            self._flush()
            return
        except (_SSLError, ValueError) as exc:
            self._handshake_failed(exc)
            return
        counters = self.counters
        version = sslobj.version()
        if version in counters.handshakes:
            counters.handshakes[version] += 1
        if sslobj.session_reused:
            counters.resumed += 1
        held = self.outgoing.pending if version == "TLSv1.3" else 0
        if held:
            # TLS 1.3: all that is left to write now is the session tickets. They go with the
            # first write (a response: one record more in the same send), or with close's
            # close_notify, or when the handshake timer fires, whichever comes first.
            self.held = held
        else:
            self._flush()  # TLS 1.2: the server's last flight (its Finished)
            timer = self.timer
            if timer is not None:
                timer.cancel()
                self.timer = None
        self.state = OPEN
        app = self.app
        app.connection_made(self)
        if self.write_paused and self.state == OPEN:
            app.pause_writing()
        if self.state == OPEN and not self.read_paused:
            left = self.incoming.pending
            if not left:
                self.drained = True  # the first record takes data_received's short way
                return
            # The client's first request came with its Finished: what the BIO holds is the end
            # of ``data``. One whole record there is read the short way too.
            at = len(data) - left
            if (
                at >= 0
                and left > RECORD_HEADER
                and left == RECORD_HEADER + (data[at + 3] << 8 | data[at + 4])
            ):
                self.drained = True
                self._read_record(left)
            else:
                self._read()

    def _handshake_failed(self, exc: BaseException, abort: bool = False) -> None:
        if self.state != HANDSHAKE:
            return
        self.state = REFUSED
        self.closing = True
        timer = self.timer
        if timer is not None:
            timer.cancel()
            self.timer = None
        self.counters.failures[failure_reason(exc)] += 1
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if abort:
            transport.abort()
        else:
            self._flush()  # the alert that says why
            transport.close()

    def _handshake_timeout(self) -> None:
        self.timer = None
        if self.state == HANDSHAKE:
            self._handshake_failed(TimeoutError("the TLS handshake did not complete in time"), True)
        elif self.held and not self.closing:
            self._flush()  # session tickets still held back: nothing was written since

    # -- reading -------------------------------------------------------------------------------

    def _read_record(self, size: int) -> None:
        """Decrypt the one whole record of ``size`` bytes that the BIO holds (and nothing
        else, in it or in OpenSSL: ``drained``) into the app."""
        try:
            data = self.ssl.read(size)  # more than its plaintext: it is taken whole
        except _WantRead:  # no application data in it (a ticket, KeyUpdate)
            self.drained = False
            if self.outgoing.pending > self.held:
                self._flush()
            return
        except _SSLError as exc:
            self._fatal(exc)
            return
        if not data:
            self._close_notify()
            return
        if len(data) >= size:  # not an AEAD record after all: what is left, the loop reads
            self.drained = False
        self.app.data_received(data)
        if not self.drained and not self.read_paused and not self.closing and self.state == OPEN:
            self._read()

    def _read(self) -> None:
        """Decrypt the records in the incoming BIO into the app while it reads."""
        sslobj = self.ssl
        incoming = self.incoming
        app = self.app
        self.drained = False
        while True:
            try:
                data = sslobj.read(READ_SIZE)
            except _WantRead:
                break  # a partial record, or one with no application data (a ticket, KeyUpdate)
            except _SSLError as exc:
                self._fatal(exc)
                return
            if not data:
                self._close_notify()
                return
            app.data_received(data)
            if self.read_paused or self.closing or self.state != OPEN:
                return
            if not incoming.pending and not sslobj.pending():
                self.drained = True
                break
        if self.outgoing.pending > self.held:  # what reading made OpenSSL answer (KeyUpdate)
            self._flush()

    def _close_notify(self) -> None:
        """The client's ``close_notify``: the end of what it sends."""
        self._flush()
        self.state = DONE
        if not self.app.eof_received():
            self.close()

    def _resume_read(self) -> None:
        self.reading_scheduled = False
        if self.state == OPEN and not self.read_paused and not self.closing:
            self._read()

    def _fatal(self, exc: BaseException) -> None:
        """A record we cannot decrypt: the connection is over."""
        self.state = DONE
        self.closing = True
        self.transport.abort()

    def _flush(self) -> None:
        outgoing = self.outgoing
        self.held = 0
        if outgoing.pending:
            self.transport.write(outgoing.read())

    # -- the app's transport -------------------------------------------------------------------

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self.closing or not data:
            return
        try:
            self.ssl.write(data)
        except _SSLError as exc:
            self._fatal(exc)
            return
        self.held = 0
        self.transport.write(self.outgoing.read())  # (with the session tickets held back)

    def writelines(self, lines: Any) -> None:
        self.write(b"".join(lines))

    def can_write_eof(self) -> bool:
        return False  # TLS has no half-close: close_notify ends both directions

    def write_eof(self) -> None:
        raise NotImplementedError("TLS connections cannot half-close")

    def close(self) -> None:
        if self.closing:
            return
        self.closing = True
        transport = self.transport
        if transport is None:
            return
        if self.state != HANDSHAKE:
            # Queues our close_notify (after any session tickets held back). The client's is
            # not awaited: the second SSL_shutdown inside raises SSLWantReadError. (A plain
            # try/except: contextlib.suppress is an object and two calls per connection.)
            try:  # noqa: SIM105
                self.ssl.shutdown()
            except (_SSLError, ValueError):
                pass
            self._flush()
        transport.close()

    def abort(self) -> None:
        self.closing = True
        if self.transport is not None:
            self.transport.abort()

    def is_closing(self) -> bool:
        return self.closing or self.transport.is_closing()

    def pause_reading(self) -> None:
        if not self.read_paused:
            self.read_paused = True
            if not self.closing:
                self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.read_paused:
            self.read_paused = False
            if not self.closing:
                self.transport.resume_reading()
            if not self.reading_scheduled and (self.incoming.pending or self.ssl.pending()):
                self.reading_scheduled = True
                self.loop.call_soon(self._resume_read)

    def is_reading(self) -> bool:
        return not self.read_paused and not self.closing

    def get_write_buffer_size(self) -> int:
        return cast(int, self.transport.get_write_buffer_size())

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return cast(tuple[int, int], self.transport.get_write_buffer_limits())

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self.transport.set_write_buffer_limits(high, low)

    def set_protocol(self, protocol: Any) -> None:
        self.app = protocol

    def get_protocol(self) -> Any:
        return self.app

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        sslobj = self.sslobj
        if name == "ssl_object":
            return sslobj
        if name == "peercert":
            return sslobj.getpeercert()
        if name == "sslcontext":
            return sslobj.context
        if name == "cipher":
            return sslobj.cipher()
        if name == "compression":
            return sslobj.compression()
        if name == "peercert_binary":
            return sslobj.getpeercert(True)
        return self.transport.get_extra_info(name, default)

"""The message bus between the control plane (supervisor) and data-plane workers: framing.

Between processes, frames travel over a socketpair: a 4-byte big-endian length followed by the
frame body, an orjson document. With ``workers = 0`` the same ``Bus`` interface connects the
two sides inside one process (``LocalBus``), so there is a single code path for the logic on
either side, and the bodies are the very same bytes.

This module owns framing only; it never interprets a frame. What the bodies mean, and how a
message becomes one, is ``lb/wire.py``: a sender passes ``wire.encode(msg)`` to ``send`` and
a receiver's handler decodes with ``wire.decode_to_worker`` or ``wire.decode_to_supervisor``.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Callable
from typing import Protocol, cast

Handler = Callable[[bytes], None]  # called with each frame body, on the loop

_LEN = struct.Struct("!I")
MAX_FRAME = 64 * 1024 * 1024


class Bus(Protocol):
    """One end of a bus. ``send`` takes a frame body and never blocks; the handler of the other
    end is called with it on the loop."""

    def send(self, body: bytes) -> None: ...

    def close(self) -> None: ...


def encode_frame(body: bytes) -> bytes:
    return _LEN.pack(len(body)) + body


class FrameDecoder:
    """Accumulates bytes and yields the body of every complete frame."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data
        out: list[bytes] = []
        buf = self._buf
        pos = 0
        while len(buf) - pos >= 4:
            (n,) = _LEN.unpack_from(buf, pos)
            if n > MAX_FRAME:
                raise ValueError(f"bus frame of {n} bytes exceeds {MAX_FRAME}")
            if len(buf) - pos - 4 < n:
                break
            out.append(bytes(buf[pos + 4 : pos + 4 + n]))
            pos += 4 + n
        if pos:
            del buf[:pos]
        return out


class PipeBus(asyncio.Protocol):
    """A bus end over a connected stream socket (one end of a socketpair)."""

    def __init__(self, on_message: Handler, on_close: Callable[[], None] | None = None) -> None:
        self._on_message = on_message
        self._on_close = on_close
        self._decoder = FrameDecoder()
        self._transport: asyncio.Transport | None = None
        self.closed = asyncio.get_running_loop().create_future()

    @classmethod
    async def connect(
        cls,
        sock: socket.socket,
        on_message: Handler,
        on_close: Callable[[], None] | None = None,
    ) -> PipeBus:
        loop = asyncio.get_running_loop()
        _, proto = await loop.connect_accepted_socket(lambda: cls(on_message, on_close), sock=sock)
        return proto

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement the interface without subclassing asyncio.Transport.
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        for body in self._decoder.feed(data):
            self._on_message(body)

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        if not self.closed.done():
            self.closed.set_result(None)
        if self._on_close is not None:
            self._on_close()

    def send(self, body: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(encode_frame(body))

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


class LocalBus:
    """A bus end inside one process. Delivery is deferred with ``call_soon`` so that ordering
    and re-entrancy match the pipe: a handler never runs inside ``send``. It carries the same
    frame bodies as the pipe, so both ends decode exactly what a worker process would."""

    def __init__(self) -> None:
        self.peer: LocalBus | None = None
        self.on_message: Handler = lambda _body: None
        self._loop = asyncio.get_running_loop()

    @staticmethod
    def pair() -> tuple[LocalBus, LocalBus]:
        a, b = LocalBus(), LocalBus()
        a.peer, b.peer = b, a
        return a, b

    def send(self, body: bytes) -> None:
        if self.peer is not None:
            self._loop.call_soon(self.peer.on_message, body)

    def close(self) -> None:
        self.peer = None

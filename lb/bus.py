"""The message bus between the control plane (supervisor) and data-plane workers.

Messages are plain dicts. Between processes they travel over a socketpair as frames: a 4-byte
big-endian length followed by an orjson document. With ``workers = 0`` the same ``Bus``
interface connects the two sides inside one process, so there is a single code path for the
logic on either side.

Messages, supervisor -> worker:
  ``{"type": "config", "config": {...}}``   the validated config (first frame, and on reload)
  ``{"type": "pools", "pools": {name: [backend, ...]}}``  a full snapshot of pool membership
  ``{"type": "backend", "pool": name, "backend": {...}}``  one backend added or changed
  ``{"type": "remove", "pool": name, "id": id}``  one backend removed
  ``{"type": "close_backend", "pool": name, "id": id}``  abort what still uses the backend
      (drain_timeout expired, or a forced delete)
  Every message carries ``"seq"``, increasing; stats echo the last one applied, which is how
  the supervisor knows a drain reached a worker (lb/control/drain.py).
Messages, worker -> supervisor:
  ``{"type": "ready", "worker": i}``  listeners are bound
  ``{"type": "stats", "worker": i, "seq": n, ...}``  counter snapshot, about once a second,
      and at once when a drain is applied or a draining backend's last connection closes
      (fields: lb/control/stats.py)
  ``{"type": "failure", "worker": i, "pool": name, "id": id, "kind": k, "error": e}``  a
      backend failed real traffic (kind "connect", "reset", "timeout" or "5xx"): passive health
  ``{"type": "success", "worker": i, "pool": name, "id": id, "after": n}``  the backend
      succeeded after n failures reported by this worker (sent only then)

This module owns framing only; it never interprets a message.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Callable
from typing import Any, Protocol, cast

import orjson

Message = dict[str, Any]
Handler = Callable[[Message], None]

_LEN = struct.Struct("!I")
MAX_FRAME = 64 * 1024 * 1024


class Bus(Protocol):
    """One end of a bus. ``send`` never blocks; ``on_message`` is called on the loop."""

    def send(self, msg: Message) -> None: ...

    def close(self) -> None: ...


def encode_frame(msg: Message) -> bytes:
    body = orjson.dumps(msg)
    return _LEN.pack(len(body)) + body


class FrameDecoder:
    """Accumulates bytes and yields complete messages."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[Message]:
        self._buf += data
        out: list[Message] = []
        buf = self._buf
        pos = 0
        while len(buf) - pos >= 4:
            (n,) = _LEN.unpack_from(buf, pos)
            if n > MAX_FRAME:
                raise ValueError(f"bus frame of {n} bytes exceeds {MAX_FRAME}")
            if len(buf) - pos - 4 < n:
                break
            out.append(orjson.loads(bytes(buf[pos + 4 : pos + 4 + n])))
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
        for msg in self._decoder.feed(data):
            self._on_message(msg)

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        if not self.closed.done():
            self.closed.set_result(None)
        if self._on_close is not None:
            self._on_close()

    def send(self, msg: Message) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(encode_frame(msg))

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


class LocalBus:
    """A bus end inside one process. Delivery is deferred with ``call_soon`` so that ordering
    and re-entrancy match the pipe: a handler never runs inside ``send``."""

    def __init__(self) -> None:
        self.peer: LocalBus | None = None
        self.on_message: Handler = lambda _msg: None
        self._loop = asyncio.get_running_loop()

    @staticmethod
    def pair() -> tuple[LocalBus, LocalBus]:
        a, b = LocalBus(), LocalBus()
        a.peer, b.peer = b, a
        return a, b

    def send(self, msg: Message) -> None:
        if self.peer is not None:
            # Round-trip through orjson so in-process and piped messages are identical values.
            self._loop.call_soon(self.peer.on_message, orjson.loads(orjson.dumps(msg)))

    def close(self) -> None:
        self.peer = None

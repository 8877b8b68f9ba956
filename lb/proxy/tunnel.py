"""After ``101 Switching Protocols`` (WebSocket and other upgrades): a plain byte tunnel.

Both transports get a ``_TunnelSide`` protocol that writes straight to the other side, with
flow control both ways and half-close; the tunnel closes when either side is lost, or when no
byte moved for the listener's ``idle_timeout`` (read at every check, so a reload applies).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any, Protocol


class TunnelOwner(Protocol):
    """What a tunnel needs of its listener."""

    loop: asyncio.AbstractEventLoop

    @property
    def idle_timeout(self) -> float: ...

    def release(self, conn: Any) -> None: ...


class Tunnel:
    """Relays bytes both ways, with an idle timeout."""

    __slots__ = ("client", "client_proto", "closed", "handle", "last", "listener", "moved")

    def __init__(
        self,
        listener: TunnelOwner,
        client_proto: object,
        client: asyncio.Transport,
        upstream: asyncio.Transport,
        leftover: bytes,
    ) -> None:
        self.listener = listener
        self.client_proto = client_proto
        self.client = client
        self.closed = False
        self.moved = 0
        self.last = -1
        client.set_protocol(_TunnelSide(self, upstream))
        upstream.set_protocol(_TunnelSide(self, client))
        if leftover:
            upstream.write(leftover)
        client.resume_reading()
        upstream.resume_reading()
        self.handle = listener.loop.call_later(listener.idle_timeout, self._idle)

    def _idle(self) -> None:
        if self.closed:
            return
        if self.moved == self.last:
            self.close()
            return
        self.last = self.moved
        self.handle = self.listener.loop.call_later(self.listener.idle_timeout, self._idle)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.handle.cancel()
            self.client.close()
            self.listener.release(self.client_proto)


class _TunnelSide(asyncio.Protocol):
    __slots__ = ("peer", "tunnel", "write")

    def __init__(self, tunnel: Tunnel, peer: asyncio.Transport) -> None:
        self.tunnel = tunnel
        self.peer = peer
        self.write: Callable[[bytes], None] = peer.write

    def data_received(self, data: bytes) -> None:
        self.write(data)
        self.tunnel.moved += 1

    def eof_received(self) -> bool:
        if self.peer.can_write_eof() and not self.peer.is_closing():
            self.peer.write_eof()
            return True
        return False

    def pause_writing(self) -> None:
        with contextlib.suppress(RuntimeError):
            self.peer.pause_reading()

    def resume_writing(self) -> None:
        with contextlib.suppress(RuntimeError):
            self.peer.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.peer.close()
        self.tunnel.close()

"""Whether a client closed its connection, without reading from it (Linux ``TCP_INFO``).

A connection whose reading is paused (a queued request with a body, a queued tcp connection
that sent bytes) never sees the peer's FIN or RST through its transport. The kernel knows:
after a FIN the socket is in ``CLOSE_WAIT``, after a RST in ``CLOSE``. One ``getsockopt`` per
check, and only for connections that wait in a queue.
"""

from __future__ import annotations

import asyncio
import socket

_TCP_CLOSE = 7
_TCP_CLOSE_WAIT = 8
_TCP_INFO = getattr(socket, "TCP_INFO", None)


def peer_closed(transport: asyncio.BaseTransport | None) -> bool:
    """True when the peer sent FIN or RST (or the socket is gone); False when unknown."""
    if transport is None or transport.is_closing():
        return transport is not None
    sock = transport.get_extra_info("socket")
    if sock is None or _TCP_INFO is None:
        return False
    try:
        state = sock.getsockopt(socket.IPPROTO_TCP, _TCP_INFO, 1)
    except OSError:
        return True  # the descriptor is gone
    return bool(state) and state[0] in (_TCP_CLOSE, _TCP_CLOSE_WAIT)

"""``check_port_free``: lb's first bind on a port refuses one another process listens on, even
with ``SO_REUSEPORT`` (which the kernel would grant, splitting the connections silently)."""

from __future__ import annotations

import errno
import socket
from collections.abc import Iterator

import pytest

from lb.sockets import bind_socket, check_port_free
from tests.helpers import free_port


@pytest.fixture
def foreign() -> Iterator[list[socket.socket]]:
    held: list[socket.socket] = []
    yield held
    for s in held:
        s.close()


def listen(held: list[socket.socket], host: str, port: int) -> None:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    s.bind((host, port))
    s.listen()
    held.append(s)


def test_a_free_port_passes_and_the_probe_leaves_nothing_bound() -> None:
    port = free_port()
    check_port_free(f"127.0.0.1:{port}")
    check_port_free(f"127.0.0.1:{port}")  # (the probe itself did not take it)
    bind_socket(f"127.0.0.1:{port}", 16, reuse_port=False).close()


@pytest.mark.parametrize("their_host", ["127.0.0.1", "0.0.0.0"])
def test_another_reuseport_listener_is_found(foreign: list[socket.socket], their_host: str) -> None:
    port = free_port()
    listen(foreign, their_host, port)
    bind_socket(f"127.0.0.1:{port}", 16).close()  # what the kernel would let lb do
    with pytest.raises(OSError) as ei:
        check_port_free(f"127.0.0.1:{port}")
    assert ei.value.errno == errno.EADDRINUSE
    assert "another process already listens" in str(ei.value)


def test_a_listener_on_another_address_of_the_port_is_not_in_the_way(
    foreign: list[socket.socket],
) -> None:
    port = free_port()
    listen(foreign, "127.0.0.2", port)
    check_port_free(f"127.0.0.1:{port}")

"""Listening sockets that outlive workers.

The supervisor binds every listener once per worker slot (``SO_REUSEPORT``: one socket per
slot, so the kernel spreads connections across workers) and keeps its copy of each. A worker
gets its slot's sockets when it is spawned (inherited file descriptors) and, when a reload adds
or moves a listener, over its *socket channel* (a unix socket pair beside the bus; the file
descriptors travel as ``SCM_RIGHTS``). A replacement worker takes over the same sockets. So
while a worker restarts, connections that arrive for its slot wait in the kernel's accept
queue (sized by ``backlog``) instead of being refused, and a crash loses only the dead
worker's in-flight requests.

A socket is known by its *key*, ``name@bind``: a reload that keeps a listener's name and
address keeps its sockets; one that changes the address binds new ones. The supervisor closes
its copies of sockets that no listener uses any more once the workers were told (each worker
closes its own copy when it retires the listener), and all of them when it stops.
"""

from __future__ import annotations

import errno
import logging
import socket
from collections.abc import Iterable

import orjson

from lb.config import Config, ListenerConfig
from lb.model import parse_address

log = logging.getLogger("lb.sockets")

# One message on a socket channel: a small JSON header and one file descriptor.
_HEADER_MAX = 4096


def socket_key(lc: ListenerConfig) -> str:
    return f"{lc.name}@{lc.bind}"


def _bound(address: str, reuse_port: bool) -> socket.socket:
    """A TCP socket bound to ``address`` (``host:port``), with ``SO_REUSEADDR``."""
    host, port = parse_address(address)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


def bind_socket(address: str, backlog: int, reuse_port: bool = True) -> socket.socket:
    """A listening, non-blocking TCP socket on ``address`` (``host:port``)."""
    sock = _bound(address, reuse_port)
    try:
        sock.listen(backlog)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def check_port_free(address: str) -> None:
    """Raise ``OSError`` (EADDRINUSE) when another process listens on ``address`` (or on a
    wildcard that covers it). lb binds with ``SO_REUSEPORT``, which the kernel also grants
    beside another process's ``SO_REUSEPORT`` socket of the same user: a second lb on the
    port would then split its connections with us without a word. So, before the first
    socket on a port, a bind without ``SO_REUSEPORT`` checks that nobody holds it."""
    try:
        _bound(address, reuse_port=False).close()
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            raise
        raise OSError(
            errno.EADDRINUSE,
            "another process already listens on it (lb would share its connections through "
            "SO_REUSEPORT); stop that process or choose another address",
        ) from None


class BindError(Exception):
    """A listener's address cannot be bound; ``index`` is its place in ``listeners``."""

    def __init__(self, index: int, listener: ListenerConfig, exc: OSError) -> None:
        super().__init__(f"cannot bind {listener.bind}: {exc.strerror or exc}")
        self.index = index
        self.listener = listener


class SocketTable:
    """The supervisor's listening sockets: ``slots[slot][key]`` (slots count from 1)."""

    def __init__(self) -> None:
        self.slots: dict[int, dict[str, socket.socket]] = {}

    def bind(self, config: Config, slots: Iterable[int]) -> dict[int, dict[str, socket.socket]]:
        """Bind what ``config`` needs and is not bound yet, for every slot in ``slots``.
        Returns what was bound now (per slot). All or nothing: on a failure, the sockets bound
        by this call are closed and ``BindError`` is raised."""
        fresh: dict[int, dict[str, socket.socket]] = {}
        try:
            for slot in slots:
                have = self.slots.get(slot, {})
                for i, lc in enumerate(config.listeners):
                    key = socket_key(lc)
                    if key in have:
                        continue
                    try:
                        if not self._holds_port(lc.bind, fresh):
                            check_port_free(lc.bind)
                        sock = bind_socket(lc.bind, lc.backlog)
                    except OSError as exc:
                        raise BindError(i, lc, exc) from None
                    fresh.setdefault(slot, {})[key] = sock
        except BaseException:
            for socks in fresh.values():
                for s in socks.values():
                    s.close()
            raise
        for slot, socks in fresh.items():
            self.slots.setdefault(slot, {}).update(socks)
        return fresh

    def _holds_port(self, address: str, fresh: dict[int, dict[str, socket.socket]]) -> bool:
        """Whether this table (or this call) has a socket on ``address``'s port already:
        then a bind beside it is ours (another slot, a renamed listener, a reload's swap)."""
        port = parse_address(address)[1]
        return any(
            parse_address(key.rpartition("@")[2])[1] == port
            for table in (self.slots, fresh)
            for socks in table.values()
            for key in socks
        )

    def of(self, slot: int) -> dict[str, socket.socket]:
        return self.slots.get(slot, {})

    def release_unused(self, config: Config) -> None:
        """Close the copies of sockets that no listener of ``config`` uses."""
        wanted = {socket_key(lc) for lc in config.listeners}
        for socks in self.slots.values():
            for key in [k for k in socks if k not in wanted]:
                socks.pop(key).close()

    def drop_slot(self, slot: int) -> None:
        for s in self.slots.pop(slot, {}).values():
            s.close()

    def close(self) -> None:
        for slot in list(self.slots):
            self.drop_slot(slot)


# -- the socket channel ---------------------------------------------------------------------


def send_socket(channel: socket.socket, key: str, sock: socket.socket) -> None:
    """Hand ``sock`` to the worker at the other end of ``channel``."""
    header = orjson.dumps({"key": key})
    socket.send_fds(channel, [header], [sock.fileno()])


def receive_sockets(channel: socket.socket) -> list[tuple[str, socket.socket]]:
    """Every socket waiting on ``channel`` (non-blocking). An empty read with nothing received
    means the other end closed: ``EOFError``."""
    out: list[tuple[str, socket.socket]] = []
    while True:
        try:
            data, fds, _flags, _addr = socket.recv_fds(channel, _HEADER_MAX, 8)
        except (BlockingIOError, InterruptedError):
            return out
        if not data and not fds:
            if out:
                return out
            raise EOFError("socket channel closed")
        try:
            key = str(orjson.loads(data)["key"])
        except (orjson.JSONDecodeError, KeyError, TypeError):
            for fd in fds:
                socket.close(fd)
            log.warning("socket channel: a message without a key, ignored")
            continue
        out.extend((key, socket.socket(fileno=fd)) for fd in fds)


def fds_argument(socks: dict[str, socket.socket]) -> str:
    """What a worker is told on its command line: ``key=fd`` pairs, comma-free JSON."""
    return orjson.dumps({k: s.fileno() for k, s in socks.items()}).decode()


def parse_fds_argument(text: str) -> dict[str, socket.socket]:
    return {str(k): socket.socket(fileno=int(fd)) for k, fd in orjson.loads(text).items()}

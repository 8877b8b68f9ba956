"""The one interface every provider implements, and the values it speaks in.

A provider owns the members of one pool: it starts them, lists them (adopting those an
earlier scaler started), stops them, and tells the controller quickly when one dies. It knows
nothing about ``lb``: registering, draining and deregistering are the controller's job.

Guarantees a provider gives:

* ``list()`` returns every member it manages for its pool, including those started by an
  earlier scaler process (adoption), and reports dead ones with ``running`` False until
  ``stop_and_remove`` cleans them up; it never returns something it did not start.
* ``create()`` returns a member that is running and accepts TCP connections on its
  ``address``, or raises ``ProviderError`` after cleaning up whatever it started.
* ``stop_and_remove()`` stops gracefully (SIGTERM, then SIGKILL after ``grace``), removes
  what is left, and is idempotent (a member already gone is fine).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Protocol

MANAGED_BY = "scaler"  # value of the lb.managed-by label and of the backend metadata
# Between two connection attempts to a member that is starting. A refused loopback connect
# costs microseconds, and every poll saved is time a held request waits at zero members.
LISTEN_POLL = 0.01


class ProviderError(Exception):
    """A member could not be created (or the provider cannot work at all). The message is
    for an operator: what failed and what to do."""


@dataclass(frozen=True, slots=True)
class Member:
    id: str  # stable and unique: "web-9101" for a process, the container id for Docker
    name: str  # for people: "pid 1234" / the container name
    address: str  # host:port that lb sends traffic to
    created: float  # wall clock (time.time()) when it was started
    running: bool = True
    detail: str = ""  # why it is not running, when it is not
    info: dict[str, str] = field(default_factory=dict)  # shown by `lb-scaler status`


@dataclass(frozen=True, slots=True)
class MemberGone:
    """An event: the member with this id stopped (it may already be cleaned up)."""

    id: str
    detail: str


@dataclass(frozen=True, slots=True)
class CpuSample:
    """Cumulative CPU seconds of a member at ``at`` (seconds, any monotonic origin)."""

    seconds: float
    at: float


class Provider(Protocol):
    kind: str

    async def open(self) -> None:
        """Connect and load what is needed to list members. Raises ProviderError."""

    async def close(self) -> None:
        """Release connections; members keep running."""

    async def list(self) -> list[Member]: ...

    async def create(self) -> Member: ...

    async def stop_and_remove(self, member: Member, grace: float) -> None: ...

    def events(self) -> AsyncIterator[MemberGone]:
        """Fast notice of dead members; may also never yield (``list()`` still finds them)."""
        ...

    async def cpu(self, member: Member) -> CpuSample | None:
        """Cumulative CPU time, or None when it cannot be read."""
        ...


def cpu_percent(prev: CpuSample | None, cur: CpuSample | None) -> float | None:
    """CPU use between two samples, 100 = one core. None for the first sample (there is no
    interval yet) and when the samples do not make an interval."""
    if prev is None or cur is None or cur.at <= prev.at or cur.seconds < prev.seconds:
        return None
    return (cur.seconds - prev.seconds) / (cur.at - prev.at) * 100.0


async def wait_listening(
    host: str,
    port: int,
    within: float,
    gone: Callable[[], str | None],
    poll: float = LISTEN_POLL,
) -> None:
    """Until ``host:port`` accepts a TCP connection. ``gone()`` returns why the member can no
    longer come up (it exited), or None. Raises ProviderError with the reason."""
    loop = asyncio.get_running_loop()
    deadline = time.monotonic() + within
    while True:
        why = gone()
        if why is not None:
            raise ProviderError(why)
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        sock.setblocking(False)
        try:
            async with asyncio.timeout(max(0.05, min(1.0, deadline - time.monotonic()))):
                await loop.sock_connect(sock, (host, port))
            return
        except (OSError, TimeoutError):
            pass
        finally:
            sock.close()
        if time.monotonic() >= deadline:
            raise ProviderError(f"nothing accepted connections on {host}:{port} within {within:g}s")
        await asyncio.sleep(poll)


def port_is_free(host: str, port: int) -> bool:
    """Whether a member could bind ``host:port`` now (as lb.demo_server does: SO_REUSEADDR)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def pick_port(lo: int, hi: int, taken: set[int], after: int, host: str) -> int | None:
    """The next port of ``lo..hi`` after ``after`` (wrapping) that no member holds and nobody
    else listens on. Rotating keeps a just-freed port, and any stale state about it, unused
    for as long as possible."""
    size = hi - lo + 1
    start = after + 1 if lo <= after <= hi else lo
    for i in range(size):
        port = lo + (start - lo + i) % size
        if port not in taken and port_is_free(host, port):
            return port
    return None


async def cancel_quietly(task: asyncio.Task[None] | None) -> None:
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

"""Transcript ("playbook") tests for the L7 proxy, in the manner of mitmproxy's ``Playbook``.

A :class:`Playbook` runs the real ``HttpClientProtocol``, ``Exchange``, ``HttpUpstreamProtocol``,
``HttpContext``, ``Listener`` and ``PoolRuntime`` in-process, on stand-in transports and an event
loop whose clock only moves when the test says so. A test is a transcript::

    assert (
        pb
        >> Accept("client")
        >> DataReceived("client", b"GET / HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n")
        << PauseReading("client")
        << Connect("a1")                     # lb opens its first connection to backend a
        >> Connected("a1")                   # ... which succeeds
        << Write("a1", b"GET / HTTP/1.1\\r\\nHost: x\\r\\nX-Forwarded-For: ...")
        >> DataReceived("a1", b"HTTP/1.1 200 OK\\r\\nContent-Length: 0\\r\\n\\r\\n")
        << Write("client", b"HTTP/1.1 200 OK\\r\\n...")
        << ResumeReading("client")
    )

``pb >> event`` delivers an input the way the event loop would (to the protocol the transport
holds *now*, so after ``set_protocol`` bytes go to the new one), then runs the loop until
nothing more happens (no sleeps: the clock is fake). Every call lb makes on a transport
(write, writelines, pause/resume_reading, close, abort, write_eof, set_protocol), every
``loop.create_connection``, and every report it makes to its worker (a passive-health failure,
a draining backend gone idle) is recorded, in order, as an output; ``pb << output`` takes the
next recorded output and fails, showing the whole transcript, if it is not the one expected.
``pb >> event`` and ``assert pb`` fail if lb did something the transcript has not mentioned
yet. So a transcript states every call lb made, in order, and nothing else happened.

Sides are names: clients are named by :class:`Accept`; upstream connections are named after
their backend and a count, ``a1`` being the first connection lb opened to backend ``a``
(backends ``a``, ``b``, ``c``... listen on ``127.0.0.1:8001``, ``:8002``...).

Two details keep transcripts exact and stable:

* request IDs are random per process; every ``X-Request-ID: <24 hex digits>`` written is
  recorded as ``X-Request-ID: rid-N``, N counting distinct IDs in order of appearance (so a
  transcript also shows that the ID sent upstream is the one the client gets back);
* the pool balances with ``weighted`` (nginx's smooth weighted round-robin), which with equal
  weights picks ``a``, ``b``, ``a``... from the start, where ``round_robin`` starts at a random
  backend.

``loop.create_connection`` is the playbook's: it records :class:`Connect` and waits until the
transcript says :class:`Connected` or :class:`Refused`; a connect that gets neither hangs, and
``Advance`` past ``connect_timeout`` makes lb's own ``asyncio.timeout`` fire. The loop is a
real asyncio loop (a ``SelectorEventLoop``, whose only socket is its internal self-pipe) with
``time()`` replaced, so timers (the listener's sweep, the connect timeout, a tunnel's idle
check) fire exactly when the fake clock passes them.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, cast

from lb.config import parse_config
from lb.model import AdminState, Backend, HealthState
from lb.proxy.context import HttpContext, TimedConnection
from lb.proxy.http import HttpClientProtocol
from lb.proxy.listener import Listener
from lb.proxy.pool import PoolRuntime
from lb.wire import BackendEntry

CLIENT_IP = "127.0.0.9"
START = 1000.0  # the fake clock's reading when a playbook starts

# -- outputs: what lb does -------------------------------------------------------------------


@dataclass(frozen=True)
class Write:
    """``transport.write(data)`` or ``transport.writelines(parts)`` (joined)."""

    side: str
    data: bytes
    call: str = field(default="", compare=False)  # which of the two, for the transcript


@dataclass(frozen=True)
class PauseReading:
    side: str


@dataclass(frozen=True)
class ResumeReading:
    side: str


@dataclass(frozen=True)
class Close:
    side: str


@dataclass(frozen=True)
class Abort:
    side: str


@dataclass(frozen=True)
class WriteEof:
    side: str


@dataclass(frozen=True)
class SetProtocol:
    """``transport.set_protocol(p)``; ``kind`` is the class name of ``p``."""

    side: str
    kind: str


@dataclass(frozen=True)
class Connect:
    """``loop.create_connection`` to the backend that ``side`` is named after."""

    side: str


@dataclass(frozen=True)
class FailureReported:
    """``Listener.report_failure``: passive health hears that ``backend`` failed (``kind``:
    connect, reset, timeout, 5xx)."""

    backend: str
    kind: str


@dataclass(frozen=True)
class IdleReported:
    """``PoolRuntime.on_idle``: a backend that is not ``ready`` has nothing left in flight."""

    backend: str


Output = (
    Write
    | PauseReading
    | ResumeReading
    | Close
    | Abort
    | WriteEof
    | SetProtocol
    | Connect
    | FailureReported
    | IdleReported
)

# -- inputs: what the world does -------------------------------------------------------------


@dataclass(frozen=True)
class Accept:
    """A client connects (the listener's protocol factory, then ``connection_made``)."""

    side: str


@dataclass(frozen=True)
class DataReceived:
    side: str
    data: bytes


@dataclass(frozen=True)
class EofReceived:
    """The peer half-closed. If the protocol returns false the transport closes itself."""

    side: str


@dataclass(frozen=True)
class ConnectionLost:
    """The peer reset the connection (``connection_lost(ConnectionResetError())``)."""

    side: str


@dataclass(frozen=True)
class PauseWriting:
    """The transport's write buffer went over its high-water mark."""

    side: str


@dataclass(frozen=True)
class ResumeWriting:
    side: str


@dataclass(frozen=True)
class Connected:
    """The pending :class:`Connect` of ``side`` succeeds."""

    side: str


@dataclass(frozen=True)
class Refused:
    """The pending :class:`Connect` of ``side`` fails with ``ConnectionRefusedError``."""

    side: str


@dataclass(frozen=True)
class Advance:
    """The clock moves on by ``seconds``; timers that come due fire."""

    seconds: float


@dataclass(frozen=True)
class SetAdmin:
    """The supervisor sets a backend's admin state (what a worker does with the bus message:
    ``PoolRuntime.apply_backend``, then a drain closes the backend's idle upstreams)."""

    backend: str
    admin: str


@dataclass(frozen=True)
class SetHealth:
    """The supervisor says a backend's health changed (``PoolRuntime.apply_backend``)."""

    backend: str
    health: str


Input = (
    Accept
    | DataReceived
    | EofReceived
    | ConnectionLost
    | PauseWriting
    | ResumeWriting
    | Connected
    | Refused
    | Advance
    | SetAdmin
    | SetHealth
)

_RID = re.compile(rb"X-Request-ID: ([0-9a-f]{24})\r\n")


class FakeTransport:
    """A transport that records every call lb makes on it (queries are not recorded)."""

    def __init__(self, pb: Playbook, name: str, peer: tuple[str, int]) -> None:
        self.pb = pb
        self.name = name
        self.peer = peer
        self.protocol: Any = None
        self.closing = False  # close()/abort() was called, or the transport closed itself
        self.lost = False  # connection_lost was delivered

    # -- recorded calls
    def write(self, data: bytes) -> None:
        self.pb.record(Write(self.name, self.pb.normalise(bytes(data)), "write"))

    def writelines(self, parts: Iterable[bytes]) -> None:
        data = b"".join(parts)
        self.pb.record(Write(self.name, self.pb.normalise(data), "writelines"))

    def pause_reading(self) -> None:
        self.pb.record(PauseReading(self.name))

    def resume_reading(self) -> None:
        self.pb.record(ResumeReading(self.name))

    def close(self) -> None:
        self.pb.record(Close(self.name))
        self._shut()

    def abort(self) -> None:
        self.pb.record(Abort(self.name))
        self._shut()

    def write_eof(self) -> None:
        self.pb.record(WriteEof(self.name))

    def set_protocol(self, protocol: Any) -> None:
        self.pb.record(SetProtocol(self.name, type(protocol).__name__))
        self.protocol = protocol

    # -- queries
    def get_protocol(self) -> Any:
        return self.protocol

    def is_closing(self) -> bool:
        return self.closing

    def can_write_eof(self) -> bool:
        return True

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.peer if name == "peername" else default

    # -- what the event loop does
    def _shut(self) -> None:
        """Closing: ``connection_lost(None)`` follows on a later loop iteration, once."""
        if not self.closing:
            self.closing = True
            self.pb.loop.call_soon(self.lose, None)

    def lose(self, exc: Exception | None) -> None:
        if not self.lost:
            self.lost = True
            self.closing = True
            self.protocol.connection_lost(exc)


class ClockLoop(asyncio.SelectorEventLoop):
    """A real asyncio loop with a clock the test moves, and scripted outgoing connections."""

    def __init__(self, pb: Playbook) -> None:
        super().__init__()
        self.pb = pb
        self.now = START

    def time(self) -> float:
        return self.now

    async def create_connection(  # type: ignore[override]
        self, protocol_factory: Callable[[], Any], host: str, port: int, **kwargs: Any
    ) -> tuple[FakeTransport, Any]:
        return await self.pb.open_upstream(protocol_factory, host, port)


class TranscriptMismatch(AssertionError):
    pass


class Playbook:
    """One http listener with one pool ``p`` of backends ``a``, ``b``...; see the module doc.

    ``backends`` maps a backend id to its admin state (``"ready"``, ``"drain"``...).
    ``listener`` and ``pool`` are config fields that override the defaults.
    """

    def __init__(
        self,
        backends: dict[str, str] | None = None,
        *,
        listener: dict[str, Any] | None = None,
        pool: dict[str, Any] | None = None,
        health: str = "up",
    ) -> None:
        self.loop = ClockLoop(self)
        admin = backends if backends is not None else {"a": "ready"}
        self.addresses = {
            f"127.0.0.1:{8001 + i}": bid for i, bid in enumerate(admin)
        }  # address -> backend id
        listener_cfg: dict[str, Any] = {
            "name": "h",
            "bind": "127.0.0.1:18080",
            "mode": "http",
            "pool": "p",
        }
        listener_cfg.update(listener or {})
        pool_cfg: dict[str, Any] = {
            "strategy": "weighted",
            "backends": [{"address": a, "id": b} for a, b in self.addresses.items()],
        }
        pool_cfg.update(pool or {})
        cfg = parse_config({"listeners": [listener_cfg], "pools": {"p": pool_cfg}})
        self.pool = PoolRuntime("p", cfg.pools["p"])
        self.pool.apply_snapshot(
            [
                BackendEntry(
                    id=b,
                    address=a,
                    weight=1,
                    effective_weight=1.0,
                    admin=AdminState(admin[b]),
                    health=HealthState(health),
                    max_conn=cfg.pools["p"].max_conn,
                )
                for a, b in self.addresses.items()
            ]
        )
        self.pool.on_idle = lambda b: self.record(IdleReported(b.id))
        self.listener = Listener(cfg.listeners[0], {"p": self.pool}, self.loop, self._report)
        self.listener.access.lines = []  # keep access-log lines in memory (no file)
        # What Listener.start does for an http listener (without binding a socket).
        conns = cast(Iterable[TimedConnection], self.listener.connections)
        self.ctx = self.listener.http = HttpContext(
            self.listener.config, self.loop, conns, self.listener.access, self.listener.pools
        )
        self.transports: dict[str, FakeTransport] = {}
        self.clients: dict[str, HttpClientProtocol] = {}
        self._opened: dict[str, int] = {}  # backend id -> connections opened
        self._connecting: dict[str, asyncio.Future[None]] = {}
        self._rids: dict[bytes, bytes] = {}
        self.outputs: list[Output] = []
        self._consumed = 0
        self.transcript: list[str] = []

    # -- the transcript ------------------------------------------------------------------------

    def __rshift__(self, event: Input) -> Playbook:
        self._check_nothing_left(f"before >> {event}")
        self.transcript.append(f">> {event}")
        self._deliver(event)
        self.settle()
        return self

    def __lshift__(self, expected: Output) -> Playbook:
        if self._consumed >= len(self.outputs):
            self._fail(f"expected << {expected}, but lb did nothing more")
        actual = self.outputs[self._consumed]
        if actual != expected:
            self._fail(f"expected << {expected}\n     got << {actual}")
        self._consumed += 1
        self.transcript.append(f"<< {actual}")
        return self

    def __bool__(self) -> bool:
        self._check_nothing_left("at the end")
        return True

    def _check_nothing_left(self, where: str) -> None:
        if self._consumed < len(self.outputs):
            self._fail(f"outputs not in the transcript ({where})")

    def _fail(self, why: str) -> None:
        lines = ["", *self.transcript, f"!! {why}"]
        lines += [f"   (unmatched) {o}" for o in self.outputs[self._consumed :]]
        raise TranscriptMismatch("\n".join(lines))

    def record(self, output: Output) -> None:
        self.outputs.append(output)

    def normalise(self, data: bytes) -> bytes:
        def name(m: re.Match[bytes]) -> bytes:
            rid = m.group(1)
            alias = self._rids.setdefault(rid, b"rid-%d" % (len(self._rids) + 1))
            return b"X-Request-ID: " + alias + b"\r\n"

        return _RID.sub(name, data)

    # -- delivering inputs ---------------------------------------------------------------------

    def _deliver(self, event: Input) -> None:
        if isinstance(event, Accept):
            assert event.side not in self.transports, f"{event.side} already exists"
            t = FakeTransport(self, event.side, (CLIENT_IP, 50000 + len(self.clients)))
            # What Listener.start's protocol factory makes.
            proto = HttpClientProtocol(self.listener, self.ctx)
            t.protocol = proto
            self.transports[event.side] = t
            self.clients[event.side] = proto
            proto.connection_made(cast(asyncio.Transport, t))
        elif isinstance(event, Advance):
            self.loop.now += event.seconds
        elif isinstance(event, SetAdmin | SetHealth):
            b = self.backend(event.backend)
            entry = BackendEntry(
                id=b.id,
                address=b.address,
                weight=b.weight,
                effective_weight=float(b.weight),
                admin=AdminState(event.admin) if isinstance(event, SetAdmin) else b.admin,
                health=HealthState(event.health) if isinstance(event, SetHealth) else b.health,
                max_conn=b.max_conn,
            )
            self.pool.apply_backend(entry)
            if isinstance(event, SetAdmin) and event.admin != "ready":
                self.listener.close_idle_upstreams(b)
        elif isinstance(event, Connected | Refused):
            fut = self._connecting.pop(event.side, None)
            assert fut is not None and not fut.done(), f"no connect of {event.side} is pending"
            if isinstance(event, Connected):
                fut.set_result(None)
            else:
                fut.set_exception(ConnectionRefusedError(111, "Connection refused"))
        else:
            t = self.transports[event.side]
            assert not t.lost, f"{event.side} is gone already"
            proto = t.protocol
            if isinstance(event, DataReceived):
                proto.data_received(event.data)
            elif isinstance(event, EofReceived):
                if not proto.eof_received():
                    t._shut()  # the transport closes itself (not a call lb made)
            elif isinstance(event, ConnectionLost):
                t.lose(ConnectionResetError(104, "Connection reset by peer"))
            elif isinstance(event, PauseWriting):
                proto.pause_writing()
            else:
                proto.resume_writing()

    def settle(self) -> None:
        """Run the loop until nothing more happens (the clock does not move): batches of a
        few iterations, until a batch records no output and starts no task."""

        async def spin() -> None:
            for _ in range(5):
                await asyncio.sleep(0)

        for _ in range(100):
            before = len(self.outputs), len(asyncio.all_tasks(self.loop))
            self.loop.run_until_complete(spin())
            if (len(self.outputs), len(asyncio.all_tasks(self.loop))) == before:
                return
        raise AssertionError("the loop never settles")

    async def open_upstream(
        self, factory: Callable[[], Any], host: str, port: int
    ) -> tuple[FakeTransport, Any]:
        """``loop.create_connection``: record it, wait for the transcript's answer."""
        bid = self.addresses[f"{host}:{port}"]
        n = self._opened[bid] = self._opened.get(bid, 0) + 1
        side = f"{bid}{n}"
        self.record(Connect(side))
        fut = self._connecting[side] = self.loop.create_future()
        try:
            await fut  # Connected, Refused, or cancelled (connect timeout, client gone)
        finally:
            self._connecting.pop(side, None)
        t = FakeTransport(self, side, (host, port))
        proto = factory()
        t.protocol = proto
        self.transports[side] = t
        proto.connection_made(t)
        return t, proto

    def _report(self, pool: str, backend: Backend, kind: str, exc: BaseException | None) -> None:
        self.record(FailureReported(backend.id, kind))

    # -- looking at state ----------------------------------------------------------------------

    def backend(self, bid: str) -> Backend:
        return self.pool.backends[bid]

    def active(self) -> dict[str, int]:
        """``Backend.active`` of every backend (in-flight requests in this worker)."""
        return {bid: b.active for bid, b in self.pool.backends.items()}

    def access_log(self) -> list[bytes]:
        lines = self.listener.access.lines
        assert lines is not None
        return lines

    def open_clients(self) -> list[str]:
        """The clients the listener still counts as connected (``Listener.connections``)."""
        return [name for name, c in self.clients.items() if c in self.listener.connections]

    def pending_connects(self) -> list[str]:
        return sorted(self._connecting)

    def close(self) -> None:
        """Tear down: timers, pooled connections, pending tasks, the loop."""
        self.ctx.close()
        tasks = asyncio.all_tasks(self.loop)
        for task in tasks:
            task.cancel()
        if tasks:
            self.loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        self.loop.close()

"""The chaos harness: a recording load client, seeded schedules, process finders, a checker.

Theory of operation
-------------------
A chaos test starts real processes (``lb``, demo backends, ``lb-scaler`` and its members, or
Docker containers), puts a steady load through lb with :class:`Traffic`, and runs a *schedule*:
a list of :class:`Step` values drawn from a seeded ``random.Random`` by a pure generator
(``worker_steps``, ``supervisor_steps``, ...). Executing a step kills something (SIGKILL or
SIGTERM) and records an :class:`Incident`: what was killed, when (``time.monotonic()``, the
clock the load client also uses), and when the system was back (``t_back``). The seed fixes
the schedule (steps, signals, delays, the client's request mix), not the interleaving with the
processes: a replay runs the same schedule against the same code, which is what finds a flaky
defect again in a few runs.

:class:`Traffic` runs in a thread of its own with its own event loop, so that the schedule (plain
blocking code in the test) never delays the client's clock or its requests. ``concurrency``
client slots each hold at most one connection and one request at a time: a connection carries
1 to 6 requests (keep-alive), then closes (sometimes with ``Connection: close``), and a new one
is opened. Requests are GETs and small POSTs whose echoed body is compared. Every request
becomes a :class:`Record`: start, end, slot, connection, its index on the connection, and the
outcome: ``ok``, an HTTP status (``502`` ...), ``refused`` (ECONNREFUSED on connect),
``reset`` (ECONNRESET, or a response cut short), ``closed`` (EOF before any response byte),
``timeout``, ``corrupt`` (an echo that differs) or ``error``. Optionally an API writer, in the
same loop, changes the pool through the control API (adds backends, sets weights) and records
each call as ``ok`` (acknowledged), ``fail`` (never reached lb: connection refused or no socket)
or ``info`` (sent, no answer: it may or may not have been applied), as Jepsen does.

:class:`Checker` turns the records, incidents and observations into verdicts, one per invariant
(pass, fail with numbers, or n/a), prints a summary and fails the test with the seed in the
message. The invariants and how failures are attributed are in its docstring.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import http.client
import itertools
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from tests.helpers import ROOT, Proc, ProcessGroup, free_port, to_toml, wait_port

DEFAULT_SEED = 1414
TAG_ENV = "LB_CHAOS_TAG"
# A failed request is "in flight at the kill" when it ended after the kill and started no later
# than this after it: the signal is sent before the process is gone, and a keep-alive request
# sent while a SIGTERM'd worker closes its idle connections is in flight at its death.
AFTER = 0.5
# Seconds for lb to have every worker accepting again: the restart backoff is at most 5 s, and
# a worker process takes 1-2 s to start on a loaded 2-core machine.
RECOVERY_LIMIT = 10.0


# -- seeds ----------------------------------------------------------------------------------


def base_seed() -> int:
    """``CHAOS_SEED``: unset -> the fixed default; ``random`` -> a new one; ``N`` -> N."""
    raw = os.environ.get("CHAOS_SEED", "").strip()
    if not raw:
        return DEFAULT_SEED
    if raw == "random":
        return random.SystemRandom().randrange(1, 2**31)
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"CHAOS_SEED={raw!r}: give an integer or 'random'") from None


def rounds() -> int:
    """``CHAOS_ROUNDS``: how many schedules each family runs (seeds base, base+1, ...)."""
    raw = os.environ.get("CHAOS_ROUNDS", "").strip() or "1"
    n = int(raw)
    if n < 1:
        raise ValueError(f"CHAOS_ROUNDS={raw!r}: give a positive integer")
    return n


BASE_SEED = base_seed()  # once per session: every family and round derives from it
SUMMARIES: list[str] = []  # one line per schedule run, for the session's terminal summary


def schedule_rng(family: str, seed: int) -> random.Random:
    """A family's own stream: adding a family never changes another's schedule."""
    return random.Random(f"{family}:{seed}")


# -- processes ------------------------------------------------------------------------------


def proc_state(pid: int) -> str | None:
    """The state letter of ``pid`` (R, S, Z, ...), or None when it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    return raw.rsplit(b")", 1)[1].split()[0].decode()


def alive(pid: int) -> bool:
    return proc_state(pid) not in (None, "Z", "X")


def children(pid: int) -> list[int]:
    """The live children of every thread of ``pid`` (zombies left out)."""
    out: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.scandir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError):
                out += [int(x) for x in Path(task.path, "children").read_text().split()]
    return sorted(p for p in set(out) if alive(p))


def cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [x.decode(errors="replace") for x in raw.split(b"\0") if x]


def listening_inodes(port: int) -> set[int]:
    """Inodes of the TCP sockets in LISTEN on ``port`` (any address, v4 and v6)."""
    out: set[int] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as fh:
            next(fh, None)
            for line in fh:
                f = line.split()
                if len(f) > 9 and f[3] == "0A" and int(f[1].rsplit(":", 1)[1], 16) == port:
                    out.add(int(f[9]))
    return out


def socket_inodes(pid: int) -> set[int]:
    out: set[int] = set()
    with contextlib.suppress(OSError):
        for fd in os.scandir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(fd.path)
                if target.startswith("socket:["):
                    out.add(int(target[8:-1]))
    return out


_libc = ctypes.CDLL(None, use_errno=True)
_SYS_PIDFD_GETFD = 438  # x86-64 and the generic table alike (Linux 5.6)


def client_ports(pids: Iterable[int], port: int) -> set[int]:
    """The peers' ports of the connections to ``port`` that ``pids`` hold (accepted, not yet
    closed): the client connections a process would take down with it.

    Each socket of the process is borrowed with ``pidfd_getfd(2)`` for a ``getpeername`` and
    closed at once: well under a millisecond. ``/proc/net/tcp`` is the fallback; it lists every
    TIME_WAIT of the machine and takes tens of milliseconds here, while connections turn over.
    """
    out: set[int] = set()
    for pid in pids:
        try:
            out |= _borrowed_peers(pid, port)
        except OSError:
            out |= _proc_net_peers(pid, port)
    return out


def _borrowed_peers(pid: int, port: int) -> set[int]:
    out: set[int] = set()
    pidfd = os.pidfd_open(pid)
    try:
        for entry in os.scandir(f"/proc/{pid}/fd"):
            try:
                if not os.readlink(entry.path).startswith("socket:"):
                    continue
            except OSError:
                continue
            fd = _libc.syscall(_SYS_PIDFD_GETFD, pidfd, int(entry.name), 0)
            if fd < 0:
                err = ctypes.get_errno()
                if err == errno.EBADF:  # closed meanwhile
                    continue
                raise OSError(err, os.strerror(err))
            with socket.socket(fileno=fd) as sock:
                if sock.family not in (socket.AF_INET, socket.AF_INET6):
                    continue
                with contextlib.suppress(OSError):  # a listening socket has no peer
                    if sock.getsockname()[1] == port:
                        out.add(int(sock.getpeername()[1]))
    finally:
        os.close(pidfd)
    return out


def _proc_net_peers(pid: int, port: int) -> set[int]:
    inodes = socket_inodes(pid)
    out: set[int] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as fh:
            next(fh, None)
            for line in fh:
                f = line.split()
                if (
                    len(f) > 9
                    and f[3] != "0A"
                    and int(f[9]) in inodes
                    and int(f[1].rsplit(":", 1)[1], 16) == port
                ):
                    out.add(int(f[2].rsplit(":", 1)[1], 16))
    return out


def listening(pids: Iterable[int], port: int) -> list[int]:
    """Those of ``pids`` that hold a listening socket on ``port`` (whether they accept on it
    or not: a socket handed down by a parent is held from the first instruction)."""
    inodes = listening_inodes(port)
    return [p for p in pids if socket_inodes(p) & inodes]


def polled_inodes(pid: int) -> set[int]:
    """Inodes of the files registered in ``pid``'s epoll instances (``tfd ... ino:HEX`` in
    ``/proc/PID/fdinfo``): what its event loop waits on."""
    out: set[int] = set()
    with contextlib.suppress(OSError):
        for fd in os.scandir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                if os.readlink(fd.path) != "anon_inode:[eventpoll]":
                    continue
                for line in Path(f"/proc/{pid}/fdinfo/{fd.name}").read_text().splitlines():
                    if line.startswith("tfd:") and " ino:" in line:
                        out.add(int(line.split(" ino:", 1)[1].split()[0], 16))
    return out


class ListenWatch:
    """The listening sockets of a port, re-read at most every ``max_age`` seconds when a
    process polls an inode not known yet (``/proc/net/tcp`` lists every TIME_WAIT of the
    load too: reading it every few milliseconds would cost a core)."""

    def __init__(self, port: int, max_age: float = 0.1) -> None:
        self.port = port
        self.max_age = max_age
        self.inodes: set[int] = set()
        self.read_at = -1e9

    def known(self, polled: set[int]) -> bool:
        """Whether one of ``polled`` is a listening socket of the port."""
        if polled & self.inodes:
            return True
        if polled and time.monotonic() - self.read_at >= self.max_age:
            self.inodes = listening_inodes(self.port)
            self.read_at = time.monotonic()
            return bool(polled & self.inodes)
        return False


def accepting(pids: Iterable[int], watch: ListenWatch) -> list[int]:
    """Those of ``pids`` whose event loop waits on a listening socket of the port: they accept.
    A worker is counted from the moment it serves, in either socket design (a worker binding
    its own socket, or one handed the supervisor's), and not while it starts or stops."""
    return [p for p in pids if watch.known(polled_inodes(p))]


def tagged(tag: str) -> list[int]:
    """Live processes (other than this one) with ``LB_CHAOS_TAG=tag`` in their environment."""
    want = f"{TAG_ENV}={tag}".encode()
    me = os.getpid()
    out = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            if want not in Path(entry.path, "environ").read_bytes().split(b"\0"):
                continue
        except OSError:
            continue
        if alive(int(entry.name)):
            out.append(int(entry.name))
    return sorted(out)


def kill_tagged(tag: str) -> list[int]:
    found = tagged(tag)
    for pid in found:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    return found


@contextlib.contextmanager
def prompt() -> Iterator[None]:
    """Inside: this thread gets the GIL back within microseconds after each system call (the
    load client's thread would otherwise hold it up to the switch interval every time): a
    read of ``/proc`` just before a kill then takes a few milliseconds, not tens."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(0.00002)
    try:
        yield
    finally:
        sys.setswitchinterval(before)


@contextlib.contextmanager
def frozen(pids: Sequence[int], limit: float = 1.0) -> Iterator[None]:
    """``pids`` stopped (SIGSTOP) inside, continued (SIGCONT) after: what they hold can be read
    while they cannot accept, and a kill sent inside lands on exactly that (a SIGTERM is
    handled once they continue). A stop of a millisecond or two is all it costs them."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGSTOP)
    try:
        wait_until(lambda: all(proc_state(p) in (None, "T", "t", "Z") for p in pids), limit, 0)
        yield
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


def signal_named(name: str) -> signal.Signals:
    return signal.Signals[name]


def wait_until(
    cond: Callable[[], Any], limit: float, poll: float = 0.01
) -> tuple[Any, float | None]:
    """Poll ``cond`` until it is truthy: (its value, the monotonic time it was), or (last, None)."""
    deadline = time.monotonic() + limit
    while True:
        got = cond()
        if got:
            return got, time.monotonic()
        if time.monotonic() > deadline:
            return got, None
        time.sleep(poll)


class TaggedGroup(ProcessGroup):
    """A ProcessGroup whose processes carry ``LB_CHAOS_TAG`` (their children inherit it)."""

    def __init__(self, tmp: Path, tag: str) -> None:
        super().__init__(tmp)
        self.tag = tag
        self.env = {**os.environ, TAG_ENV: tag}
        self._names: Counter[str] = Counter()

    def spawn(self, name: str, args: list[str], port: int = 0) -> Proc:
        self._names[name] += 1
        if self._names[name] > 1:
            name = f"{name}-{self._names[name]}"
        logf = self.tmp / f"{name}.log"
        with logf.open("wb") as fh:
            popen = subprocess.Popen(
                args,
                stdout=fh,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
                stdin=subprocess.DEVNULL,
                env=self.env,
            )
        p = Proc(popen, name, port, logf)
        self.procs.append(p)
        return p


# -- the control API, from blocking code ----------------------------------------------------


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: Path, timeout: float) -> None:
        super().__init__("lb", timeout=timeout)
        self.path = path

    def connect(self) -> None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        try:
            s.connect(str(self.path))
        except OSError:
            s.close()
            raise
        self.sock = s


def api(sock: Path, method: str, path: str, body: Any = None, timeout: float = 10.0) -> Any:
    """One control API call over the unix socket; the parsed JSON (raises on 4xx/5xx)."""
    conn = _UnixHTTPConnection(sock, timeout)
    try:
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if data is not None else {}
        conn.request(method, path, body=data, headers=headers)
        resp = conn.getresponse()
        raw = resp.read()
        if resp.status >= 400:
            raise RuntimeError(f"{method} {path}: {resp.status} {raw[:300]!r}")
        return json.loads(raw) if raw else None
    finally:
        conn.close()


def pool_backends(sock: Path, pool: str) -> list[dict[str, Any]]:
    """``GET /v1/pools``: the backends of ``pool`` (the view the invariants are checked on)."""
    doc = api(sock, "GET", "/v1/pools")
    for p in doc["pools"]:
        if p["name"] == pool:
            return list(p["backends"])
    raise AssertionError(f"no pool {pool!r} in GET /v1/pools")


# -- lb as a process ------------------------------------------------------------------------


def lb_config(
    port: int,
    backends: Sequence[int],
    *,
    workers: int,
    pool: str = "web",
    health: bool = True,
    **extra: Any,
) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "lb": {"workers": workers, "grace": "2s", "log_format": "json"},
        "listeners": [{"name": "web", "bind": f"127.0.0.1:{port}", "mode": "http", "pool": pool}],
        "pools": {
            pool: {
                "strategy": "least_conn",
                "backends": [{"address": f"127.0.0.1:{b}"} for b in backends],
            }
        },
    }
    if health:
        cfg["pools"][pool]["health"] = {
            "type": "http",
            "path": "/healthz",
            "interval": "500ms",
            "fast_interval": "100ms",
            "timeout": "300ms",
        }
    cfg.update(extra)
    return cfg


@dataclass
class Lab:
    """The processes of one schedule, all tagged; `lb run` again reads the same config file."""

    group: TaggedGroup
    tmp: Path
    cfg: dict[str, Any] = field(default_factory=dict)
    lb: Proc | None = None
    _watch: ListenWatch | None = None

    @property
    def tag(self) -> str:
        return self.group.tag

    @property
    def path(self) -> Path:
        return self.tmp / "lb.toml"

    @property
    def sock(self) -> Path:
        return self.tmp / "run" / "lb.sock"

    @property
    def port(self) -> int:
        return int(self.cfg["listeners"][0]["bind"].rsplit(":", 1)[1])

    def write(self, cfg: dict[str, Any]) -> None:
        self.cfg = cfg
        self.path.write_text(to_toml(cfg))

    def start_lb(self, limit: float = 20.0) -> Proc:
        """``lb run`` on the config file; returns once its banner says it is running."""
        p = self.group.spawn("lb", [sys.executable, "-m", "lb", "run", "-c", str(self.path)])
        _, t = wait_until(
            lambda: "lb: running" in p.output() or p.popen.poll() is not None, limit, 0.01
        )
        if p.popen.poll() is not None or t is None:
            p.stop(signal.SIGKILL)
            raise AssertionError(f"lb did not start:\n{p.output()[-3000:]}")
        p.port = self.port
        self.lb = p
        return p

    def workers(self) -> list[int]:
        assert self.lb is not None
        return children(self.lb.pid)

    def accepting_workers(self) -> list[int]:
        if self._watch is None or self._watch.port != self.port:
            self._watch = ListenWatch(self.port)
        return accepting(self.workers(), self._watch)

    def backend(self, name: str, port: int | None = None) -> Proc:
        return self.group.backend(name, port=port)

    def backends(self, *names: str) -> list[Proc]:
        """Demo backends started together (a Python start is about a second here)."""
        procs = []
        for name in names:
            port = free_port()
            procs.append(
                self.group.spawn(
                    name,
                    [sys.executable, "-m", "lb.demo_server", "--port", str(port), "--name", name],
                    port,
                )
            )
        for p in procs:
            wait_port(p.port)
        return procs


# -- the load client ------------------------------------------------------------------------


@dataclass(slots=True)
class Record:
    start: float
    end: float
    slot: int
    conn: int
    nth: int  # index of the request on its connection (0: it opened the connection)
    method: str
    outcome: str  # "ok", an HTTP status ("502"), refused, reset, closed, timeout, corrupt, error
    backend: str = ""
    detail: str = ""
    opened: float = 0.0  # when its connection was opened (the connect's start)
    lport: int = 0  # the client's port of its connection (0: the connect failed)

    @property
    def failed(self) -> bool:
        return self.outcome != "ok"


@dataclass(frozen=True)
class Mix:
    """What the client asks for: GET paths (drawn at random), and a POST path (or None)."""

    gets: tuple[str, ...] = ("/sleep?ms=5", "/sleep?ms=20", "/", "/sleep?ms=60")
    post: str | None = "/echo"
    post_share: float = 0.3
    echo: bool = True  # the POST answer must be the body sent


@dataclass
class ApiOp:
    t0: float
    t1: float
    kind: str  # "add" or "weight"
    address: str
    weight: int
    outcome: str  # ok / fail / info
    detail: str = ""
    created: bool | None = None


@dataclass
class ApiPlan:
    """The API writer's job: add each of ``spares`` once, and set weights on ``existing``
    and on the spares added, every ``every`` seconds (seeded)."""

    sock: Path
    pool: str
    existing: list[str]
    spares: list[str]
    every: tuple[float, float] = (0.15, 0.4)


class Traffic:
    """A steady load (and optionally an API writer) in a thread of its own, until ``stop``."""

    def __init__(
        self,
        port: int,
        seed: int,
        *,
        concurrency: int = 8,
        mix: Mix | None = None,
        timeout: float = 10.0,
        limit: float = 120.0,
        max_requests: int = 200_000,
        pace: tuple[float, float] = (0.002, 0.012),
        api: ApiPlan | None = None,
    ) -> None:
        self.port = port
        self.seed = seed
        self.concurrency = concurrency
        self.mix = mix or Mix()
        self.timeout = timeout
        self.limit = limit
        self.max_requests = max_requests
        self.pace = pace
        self.plan = api
        self.records: list[Record] = []
        self.ops: list[ApiOp] = []
        self.api_lock = threading.Lock()  # held by each API call, and by the test to read
        self._stopping = threading.Event()
        self._conn_ids = itertools.count(1)
        self._thread = threading.Thread(target=self._main, name="chaos-traffic", daemon=True)
        self.error: BaseException | None = None

    # -- control from the test thread -----------------------------------------------------

    def __enter__(self) -> Traffic:
        # The schedule runs in the test's thread beside this one: hand the GIL over often, so
        # that a kill due "within 50 ms" is not held up by the client's thread.
        self._switch = sys.getswitchinterval()
        sys.setswitchinterval(0.0005)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(self.timeout + 15)
        sys.setswitchinterval(getattr(self, "_switch", 0.005))
        if self._thread.is_alive():
            raise AssertionError("the load client did not stop")
        if self.error is not None:
            raise AssertionError(f"the load client crashed: {self.error!r}") from self.error

    @contextlib.contextmanager
    def api_paused(self) -> Iterator[None]:
        """No API call is in flight inside this block."""
        with self.api_lock:
            yield

    def ok_between(self, t0: float, t1: float) -> int:
        return sum(1 for r in list(self.records) if r.outcome == "ok" and t0 <= r.end <= t1)

    # -- the loop -------------------------------------------------------------------------

    def _main(self) -> None:
        try:
            asyncio.run(self._run())
        except BaseException as exc:  # reported by stop()
            self.error = exc

    def _done(self) -> bool:
        return (
            self._stopping.is_set()
            or time.monotonic() > self._deadline
            or len(self.records) >= self.max_requests
        )

    async def _run(self) -> None:
        self._deadline = time.monotonic() + self.limit
        tasks = [self._slot(i) for i in range(self.concurrency)]
        if self.plan is not None:
            tasks.append(self._api_writer(self.plan))
        await asyncio.gather(*tasks)

    def _request(self, rng: random.Random, last: bool) -> tuple[str, bytes, bytes]:
        close = b"Connection: close\r\n" if last and rng.random() < 0.5 else b""
        mix = self.mix
        if mix.post is not None and rng.random() < mix.post_share:
            body = bytes(rng.randrange(97, 123) for _ in range(rng.randrange(1, 200)))
            head = (
                f"POST {mix.post} HTTP/1.1\r\nHost: chaos\r\nContent-Length: {len(body)}\r\n"
                "Content-Type: text/plain\r\n"
            ).encode()
            return "POST", head + close + b"\r\n" + body, body
        path = rng.choice(mix.gets)
        return "GET", f"GET {path} HTTP/1.1\r\nHost: chaos\r\n".encode() + close + b"\r\n", b""

    async def _slot(self, slot: int) -> None:
        rng = random.Random(f"client:{self.seed}:{slot}")
        while not self._done():
            conn = next(self._conn_ids)
            opened = start = time.monotonic()
            try:
                async with asyncio.timeout(self.timeout):
                    reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
            except OSError as exc:
                self._note(start, slot, (conn, 0, opened, 0), "GET", _os_outcome(exc), repr(exc))
                # Not a busy loop while nothing listens (each refusal is still recorded).
                await asyncio.sleep(rng.uniform(0.02, 0.05))
                continue
            except TimeoutError:
                self._note(start, slot, (conn, 0, opened, 0), "GET", "timeout", "connect")
                continue
            lport = int(writer.get_extra_info("sockname")[1])
            try:
                n = rng.randint(1, 6)
                for nth in range(n):
                    if nth:
                        start = time.monotonic()
                    method, raw, body = self._request(rng, nth == n - 1)
                    outcome, backend, detail, keep = await self._exchange(reader, writer, raw, body)
                    where = (conn, nth, opened, lport)
                    self._note(start, slot, where, method, outcome, detail, backend)
                    if outcome != "ok" or not keep or self._done():
                        break
                    await asyncio.sleep(rng.uniform(*self.pace))
            finally:
                writer.close()
                with contextlib.suppress(OSError, TimeoutError):
                    async with asyncio.timeout(1):
                        await writer.wait_closed()
            await asyncio.sleep(rng.uniform(*self.pace))

    def _note(
        self,
        start: float,
        slot: int,
        where: tuple[int, int, float, int],  # connection, index on it, opened, client port
        method: str,
        outcome: str,
        detail: str = "",
        backend: str = "",
    ) -> None:
        conn, nth, opened, lport = where
        end = time.monotonic()
        self.records.append(
            Record(start, end, slot, conn, nth, method, outcome, backend, detail, opened, lport)
        )

    async def _exchange(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, raw: bytes, sent: bytes
    ) -> tuple[str, str, str, bool]:
        """(outcome, backend, detail, keep the connection)."""
        got_bytes = False
        try:
            async with asyncio.timeout(self.timeout):
                writer.write(raw)
                await writer.drain()
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError as exc:
                    if exc.partial:
                        return "reset", "", f"head cut after {len(exc.partial)} bytes", False
                    return "closed", "", "EOF before any response byte", False
                got_bytes = True
                status, headers = _parse_head(head)
                body = await _read_body(reader, headers)
        except TimeoutError:
            return "timeout", "", "response" if got_bytes else "no response byte", False
        except asyncio.IncompleteReadError as exc:
            return "reset", "", f"body cut after {len(exc.partial)} bytes", False
        except (ConnectionResetError, BrokenPipeError) as exc:
            return "reset", "", repr(exc), False
        except (OSError, ValueError, asyncio.LimitOverrunError) as exc:
            return "error", "", repr(exc), False
        keep = headers.get("connection", "").lower() != "close" and (
            "content-length" in headers or headers.get("transfer-encoding") == "chunked"
        )
        backend = headers.get("x-backend", "")
        if not 200 <= status < 300:
            return str(status), backend, body[:120].decode(errors="replace"), keep
        if sent and self.mix.echo and body != sent:
            return "corrupt", backend, f"sent {len(sent)} bytes, got back {len(body)}", False
        return "ok", backend, "", keep

    # -- the API writer -------------------------------------------------------------------

    async def _api_writer(self, plan: ApiPlan) -> None:
        rng = random.Random(f"api:{self.seed}")
        pending = list(plan.spares)
        added: list[str] = []
        connector = aiohttp.UnixConnector(path=str(plan.sock), force_close=True)
        async with aiohttp.ClientSession(connector=connector) as session:
            while not self._done():
                await asyncio.sleep(rng.uniform(*plan.every))
                if self._done():
                    break
                weight = rng.randint(1, 9)
                if pending and (not added or rng.random() < 0.4):
                    address, kind = pending[0], "add"
                else:
                    address, kind = rng.choice(plan.existing + added), "weight"
                # The test holds the lock while it reads the state: no call is in flight then.
                await asyncio.to_thread(self.api_lock.acquire)
                try:
                    op = await self._api_call(session, plan, kind, address, weight)
                finally:
                    self.api_lock.release()
                self.ops.append(op)
                if kind == "add" and op.outcome in ("ok", "info"):
                    # An unanswered add may have landed: weight it later (a 404 then says no).
                    if op.outcome == "ok":
                        pending.remove(address)
                    if address not in added:
                        added.append(address)

    async def _api_call(
        self, session: aiohttp.ClientSession, plan: ApiPlan, kind: str, address: str, weight: int
    ) -> ApiOp:
        t0 = time.monotonic()
        if kind == "add":
            method, url = "POST", f"http://lb/v1/pools/{plan.pool}/backends"
            body: dict[str, Any] = {
                "address": address,
                "weight": weight,
                "metadata": {"by": "chaos"},
            }
        else:
            method, url = "PATCH", f"http://lb/v1/pools/{plan.pool}/backends/{address}"
            body = {"weight": weight}
        try:
            async with session.request(
                method, url, json=body, timeout=aiohttp.ClientTimeout(total=5)
            ) as resp:
                doc = await resp.json(content_type=None)
                status = resp.status
        except aiohttp.ClientConnectorError as exc:  # never reached lb: not applied
            return ApiOp(t0, time.monotonic(), kind, address, weight, "fail", repr(exc))
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:  # sent, unanswered
            return ApiOp(t0, time.monotonic(), kind, address, weight, "info", repr(exc))
        t1 = time.monotonic()
        if status >= 400:
            return ApiOp(t0, t1, kind, address, weight, "fail", f"{status} {doc}")
        created = bool(doc.get("created")) if kind == "add" else None
        return ApiOp(t0, t1, kind, address, weight, "ok", f"{status}", created)


def _os_outcome(exc: OSError) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, ConnectionResetError):
        return "reset"
    return "error"


def _parse_head(head: bytes) -> tuple[int, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1."):
        raise ValueError(f"not a status line: {lines[0]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if line:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
    return int(parts[1]), headers


async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
    if "content-length" in headers:
        return await reader.readexactly(int(headers["content-length"]))
    if headers.get("transfer-encoding", "").lower() == "chunked":
        out = b""
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                while (await reader.readuntil(b"\r\n")) != b"\r\n":
                    pass
                return out
            out += await reader.readexactly(size)
            await reader.readexactly(2)
    return await reader.read()  # delimited by the close


# -- schedules ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """One step of a schedule. ``action`` says what; the other fields how (all seeded)."""

    action: str
    sig: str = "SIGKILL"
    pause: float = 0.5  # seconds of steady load after the step settled
    delay: float = 0.0  # the step's own delay (before the kill, or the downtime)
    pick: float = 0.0  # which victim, as a fraction of the sorted candidates
    sig2: str = ""  # the second kill of a two-kill step
    target: int = 0  # scaler: the member count the step asks for
    trigger: str = ""  # scaler: the moment of the kill

    def describe(self) -> str:
        bits = [self.action, self.sig]
        if self.sig2:
            bits.append(f"then {self.sig2}")
        if self.target:
            bits.append(f"target={self.target}")
        if self.trigger:
            bits.append(f"at {self.trigger}")
        if self.delay:
            bits.append(f"delay={self.delay * 1000:.0f}ms")
        if self.pick:
            bits.append(f"pick={self.pick:.2f}")
        bits.append(f"pause={self.pause:.2f}s")
        return " ".join(bits)


def _sig(rng: random.Random, term_share: float = 0.35) -> str:
    return "SIGTERM" if rng.random() < term_share else "SIGKILL"


def worker_steps(rng: random.Random, n: int = 5, startup: int = 2) -> list[Step]:
    """``n`` worker kills, ``startup`` of them of a replacement during its startup (never the
    first step, so that plain kills are measured even when that goes wrong)."""
    kinds = ["kill-worker"] * (n - startup) + ["kill-worker-in-startup"] * startup
    rest = kinds[1:]
    rng.shuffle(rest)
    kinds = kinds[:1] + rest
    out = []
    for kind in kinds:
        in_startup = kind == "kill-worker-in-startup"
        out.append(
            Step(
                kind,
                _sig(rng),
                pause=rng.uniform(0.4, 0.9),
                delay=rng.uniform(0.0, 0.05) if in_startup else 0.0,
                pick=rng.random(),
                sig2=_sig(rng) if in_startup else "",
            )
        )
    return out


def supervisor_steps(rng: random.Random, n: int = 3) -> list[Step]:
    """``n`` supervisor kills, each followed by ``lb run`` again after ``delay`` seconds;
    both signals appear whenever ``n`` >= 2."""
    sigs = [_sig(rng, 0.5) for _ in range(n)]
    if n >= 2 and len(set(sigs)) == 1:
        sigs[rng.randrange(n)] = "SIGTERM" if sigs[0] == "SIGKILL" else "SIGKILL"
    return [
        Step("kill-supervisor", s, pause=rng.uniform(0.5, 1.0), delay=rng.uniform(0.0, 0.3))
        for s in sigs
    ]


def backend_steps(rng: random.Random, n: int = 4) -> list[Step]:
    """``n`` backend kills, one at a time; each restarts on its port after ``delay``."""
    return [
        Step(
            "kill-backend",
            _sig(rng, 0.4),
            pause=rng.uniform(0.3, 0.8),
            delay=rng.uniform(0.3, 1.0),
            pick=rng.random(),
        )
        for _ in range(n)
    ]


UP_TRIGGERS = ("decision", "spawned", "registered", "started")
DOWN_TRIGGERS = ("decision", "draining", "stopped", "removed")


def scaler_steps(rng: random.Random, start: int = 1, lo: int = 1, hi: int = 4) -> list[Step]:
    """Scale steps (min = max = target) that kill the scaler once at every trigger of a
    scale-up and of a scale-in, in a seeded order; targets stay within [lo, hi]."""
    ups = list(UP_TRIGGERS)
    downs = list(DOWN_TRIGGERS)
    rng.shuffle(ups)
    rng.shuffle(downs)
    out = []
    current = start
    while ups or downs:
        can_up = bool(ups) and current < hi
        can_down = bool(downs) and current > lo
        if can_up and (not can_down or rng.random() < len(ups) / (len(ups) + len(downs))):
            target = min(hi, current + (2 if rng.random() < 0.25 else 1))
            trigger = ups.pop()
            direction = "scale-up"
        else:
            assert can_down, (current, ups, downs)
            target = current - 1
            trigger = downs.pop()
            direction = "scale-in"
        delay = rng.uniform(0.0, 0.3) if trigger == "decision" else 0.0
        out.append(
            Step(
                f"kill-scaler-{direction}",
                _sig(rng, 0.25),
                pause=rng.uniform(0.2, 0.5),
                delay=delay,
                target=target,
                trigger=trigger,
            )
        )
        current = target
    return out


def member_steps(rng: random.Random, n: int = 3) -> list[Step]:
    """``n`` ``docker kill`` of a member (KILL or TERM)."""
    return [
        Step("docker-kill-member", _sig(rng, 0.3), pause=rng.uniform(0.3, 0.8), pick=rng.random())
        for _ in range(n)
    ]


def pick(candidates: Sequence[int], fraction: float) -> int:
    items = sorted(candidates)
    return items[min(len(items) - 1, int(fraction * len(items)))]


# -- incidents and the checker --------------------------------------------------------------

LB_KINDS = ("worker", "worker-startup", "supervisor")
BACKEND_KINDS = ("backend", "member")


@dataclass
class Incident:
    kind: str  # worker, worker-startup, supervisor, backend, member, scaler
    what: str
    sig: str
    t_kill: float
    t_back: float | None = None  # recovered (lb: every worker accepts / banner); None: never
    t_gone: float | None = None  # the process was seen gone (backends, members)
    note: str = ""
    chained: bool = False  # a second kill followed before recovery: that one's t_back counts
    # lb processes: the client ports of the connections it held at the kill (read while it
    # was stopped); None when unknown (a worker that was not accepting yet holds none: empty).
    held: set[int] | None = None
    # Only those may fail (a SIGKILL'd worker accepts nothing more). After a SIGTERM, or the
    # supervisor's death (its workers get SIGTERM), a worker stopping gracefully may still
    # accept a few connections and close them idle, or its queue is reset when the last copy
    # of the socket closes: then ``held`` is only reported, and the bound is what holds.
    strict: bool = False

    def describe(self, t0: float) -> str:
        if self.chained:
            back = "its replacement is the next incident"
        elif self.t_back:
            back = f"back +{self.t_back - self.t_kill:.2f}s"
        else:
            back = "NOT back"
        note = f" ({self.note})" if self.note else ""
        return f"{self.t_kill - t0:7.2f}s {self.kind} {self.what} {self.sig}: {back}{note}"


@dataclass
class Verdict:
    name: str
    ok: bool | None  # None: not applicable to this schedule
    detail: str


class Checker:
    """Invariants, each a :class:`Verdict`:

    * **failures only at lb kills** -- a failed request (anything but a 2xx, refusals apart)
      must be in flight at an lb-process kill (worker or supervisor): it ended after the kill
      and started at most ``AFTER`` after it; per kill, no more of them than the client's
      connections; after a SIGKILL'd worker, only on the connections it held at the kill
      (read with ``client_ports`` while it is ``frozen``; reported for the other kills). A
      request in flight at a backend or member kill (until ``AFTER`` past its death) may fail
      with 502, no more of them than the client's connections. Nothing else may fail: not at
      a scaler kill, a drain, a scale-in, or a weight change.
    * **no refused connection while the supervisor lives** -- ECONNREFUSED only between a
      supervisor's kill (the signal) and the banner of the next ``lb run``.
    * **lb recovers** -- after every lb-process kill, every worker accepts again within
      ``RECOVERY_LIMIT`` seconds (the supervisor: the new one is running).
    * **acknowledged API changes persist** -- ``GET /v1/pools`` shows every backend whose add
      was acknowledged, and each weight is the last acknowledged one, or one sent later whose
      answer never came (it may have landed).
    * **no orphan** -- after everything was stopped: no process with the test's tag, no
      container with the test's label.
    * **no duplicate member** -- at every check, no address twice in the scaler's record, nor
      in lb's pool.
    * **lb and scaler agree** -- once settled, the scaler's members and lb's backends of the
      pool are the same addresses.
    """

    def __init__(self, family: str, seed: int, steps: Sequence[Step]) -> None:
        self.family = family
        self.seed = seed
        self.steps = list(steps)
        self.incidents: list[Incident] = []
        self.verdicts: dict[str, Verdict] = {}
        self.notes: list[str] = []
        self.t0 = time.monotonic()
        self._checks: Counter[str] = Counter()
        self._fails: dict[str, list[str]] = {}

    # -- accumulating checks (several checkpoints, one verdict) ---------------------------

    def point(self, name: str, ok: bool, detail: str) -> None:
        """One checkpoint of an invariant checked several times."""
        self._checks[name] += 1
        if not ok:
            self._fails.setdefault(name, []).append(detail)
        fails = self._fails.get(name, [])
        text = f"{self._checks[name]} checkpoint(s)"
        if fails:
            text += f", {len(fails)} failed: " + " | ".join(fails[:3])
        else:
            text += f", the last: {detail}"
        self.verdicts[name] = Verdict(name, not fails, text)

    def na(self, name: str, why: str) -> None:
        self.verdicts.setdefault(name, Verdict(name, None, why))

    def note(self, text: str) -> None:
        self.notes.append(f"{time.monotonic() - self.t0:7.2f}s {text}")

    # -- traffic --------------------------------------------------------------------------

    def traffic(self, records: Sequence[Record], concurrency: int) -> None:
        failed = [r for r in records if r.failed]
        down = [
            (i.t_kill, i.t_back if i.t_back is not None else float("inf"))
            for i in self.incidents
            if i.kind == "supervisor"
        ]
        refused = [r for r in failed if r.outcome == "refused"]
        # A refusal happens at the connect's end (its start is before the SYN was sent).
        refused_live = [r for r in refused if not any(a <= r.end <= b for a, b in down)]
        if refused_live:
            near: dict[str, list[float]] = {}
            for r in refused_live:
                what, t_kill = self._nearest(r.end)
                near.setdefault(what, []).append(r.end - t_kill)
            detail = (
                f"{len(refused_live)} refused with the supervisor alive "
                f"(of {len(refused)} refused): "
                + "; ".join(
                    f"{len(ts)} after {what} (from +{min(ts):.2f}s to +{max(ts):.2f}s)"
                    for what, ts in near.items()
                )
            )
        else:
            detail = f"0 refused with the supervisor alive ({len(refused)} while it was down)"
        self.verdicts["no refused connection while the supervisor lives"] = Verdict(
            "no refused connection while the supervisor lives", not refused_live, detail
        )

        per: dict[int, list[Record]] = {}
        unexplained: list[Record] = []
        stray: list[Record] = []
        for r in failed:
            if r.outcome == "refused":
                continue
            k, held = self._attribute(r)
            if k is None:
                unexplained.append(r)
                continue
            per.setdefault(k, []).append(r)
            if not held:
                stray.append(r)
        over = {k: rs for k, rs in per.items() if len(rs) > concurrency}
        parts = []
        if per:
            parts.append(
                "per kill: "
                + ", ".join(
                    f"{self.incidents[k].kind} {self.incidents[k].sig}@"
                    f"{self.incidents[k].t_kill - self.t0:.2f}s {len(rs)} ({_kinds(rs)})"
                    + _held_text(self.incidents[k], rs)
                    for k, rs in sorted(per.items())
                )
                + f"; bound {concurrency} per kill (the client's connections)"
            )
        if over:
            parts.append(
                "OVER the bound at "
                + ", ".join(f"{self.incidents[k].what} ({len(rs)})" for k, rs in over.items())
            )
        if stray:
            parts.append(
                f"{len(stray)} failed on a connection the killed process did not hold: "
                + "; ".join(
                    f"{r.start - self.t0:.2f}s conn {r.conn}#{r.nth} port {r.lport} {r.outcome}"
                    for r in stray[:4]
                )
            )
        if unexplained:
            parts.append(
                f"{len(unexplained)} failed outside any kill window ({_kinds(unexplained)}): "
                + "; ".join(
                    f"{r.start - self.t0:.2f}s..{r.end - self.t0:.2f}s slot {r.slot} conn "
                    f"{r.conn}#{r.nth} {r.method} {r.outcome} {r.detail[:60]}"
                    for r in unexplained[:4]
                )
            )
        if not parts:
            parts.append("no failed request apart from refusals")
        ok = not over and not unexplained and not stray
        self.verdicts["failures only at lb kills, bounded"] = Verdict(
            "failures only at lb kills, bounded", ok, "; ".join(parts)
        )

    def _attribute(self, r: Record) -> tuple[int | None, bool]:
        """(the kill a failed request is charged to, or None; False when it was on a connection
        the killed process did not hold, where only those may fail)."""
        window = [
            k
            for k, i in enumerate(self.incidents)
            if i.kind in LB_KINDS and r.end >= i.t_kill and r.start <= i.t_kill + AFTER
        ]
        for k in window:
            i = self.incidents[k]
            if not i.strict or i.held is None or r.lport in i.held:
                return k, True
        if window:
            return window[0], False
        if r.outcome == "502":
            for k, i in enumerate(self.incidents):
                gone = i.t_gone if i.t_gone is not None else i.t_kill
                if i.kind in BACKEND_KINDS and r.end >= i.t_kill and r.start <= gone + AFTER:
                    return k, True
        return None, False

    def _nearest(self, t: float) -> tuple[str, float]:
        """The last kill before ``t``: (its description, its time)."""
        before = [i for i in self.incidents if i.t_kill <= t]
        if not before:
            return "the start", self.t0
        i = max(before, key=lambda x: x.t_kill)
        return f"{i.kind} {i.what} {i.sig} at {i.t_kill - self.t0:.2f}s", i.t_kill

    def recovery(self) -> None:
        lb = [i for i in self.incidents if i.kind in LB_KINDS and not i.chained]
        if not lb:
            self.na("lb recovers after every kill", "no lb-process kill")
            return
        bad = [i for i in lb if i.t_back is None]
        worst = max((i.t_back - i.t_kill for i in lb if i.t_back is not None), default=0.0)
        detail = f"{len(lb) - len(bad)}/{len(lb)} recovered (slowest {worst:.2f}s)"
        if bad:
            detail += f"; not within {RECOVERY_LIMIT:.0f}s: " + "; ".join(
                f"{i.kind} {i.what} {i.sig} at {i.t_kill - self.t0:.2f}s ({i.note})" for i in bad
            )
        self.verdicts["lb recovers after every kill"] = Verdict(
            "lb recovers after every kill", not bad, detail
        )

    # -- control API ----------------------------------------------------------------------

    def api_state(
        self, ops: Sequence[ApiOp], backends: Sequence[dict[str, Any]], when: str
    ) -> None:
        name = "acknowledged API changes persist"
        if not ops:
            self.point(name, True, when)
            return
        seen = {b["address"]: b for b in backends}
        problems = []
        by_addr: dict[str, list[ApiOp]] = {}
        for op in ops:
            by_addr.setdefault(op.address, []).append(op)
        for address, aops in by_addr.items():
            acked_add = any(o.kind == "add" and o.outcome == "ok" for o in aops)
            if acked_add and address not in seen:
                problems.append(f"{address}: added (acknowledged) but missing")
                continue
            last_ok = max(
                (
                    k
                    for k, o in enumerate(aops)
                    if o.outcome == "ok" and (o.kind == "weight" or o.created)
                ),
                default=None,
            )
            if last_ok is None or address not in seen:
                continue
            allowed = {aops[last_ok].weight} | {
                o.weight for o in aops[last_ok + 1 :] if o.outcome == "info"
            }
            got = seen[address]["weight"]
            if got not in allowed:
                problems.append(
                    f"{address}: weight {got}, acknowledged {aops[last_ok].weight}"
                    + (
                        f" (or unanswered {sorted(allowed - {aops[last_ok].weight})})"
                        if len(allowed) > 1
                        else ""
                    )
                )
        n_ok = sum(o.outcome == "ok" for o in ops)
        self.point(
            name,
            not problems,
            f"{when}: {n_ok} acknowledged" + (": " + "; ".join(problems[:4]) if problems else ""),
        )

    # -- membership -----------------------------------------------------------------------

    def duplicates(self, record: Sequence[str], lb_addresses: Sequence[str], when: str) -> None:
        dup_rec = [a for a, n in Counter(record).items() if n > 1]
        dup_lb = [a for a, n in Counter(lb_addresses).items() if n > 1]
        detail = when
        if dup_rec:
            detail += f": twice in the scaler's record {dup_rec}"
        if dup_lb:
            detail += f": twice in lb's pool {dup_lb}"
        self.point("no duplicate member", not dup_rec and not dup_lb, detail)

    def agreement(self, record: Sequence[str], lb_addresses: Sequence[str], when: str) -> None:
        a, b = set(record), set(lb_addresses)
        detail = f"{when}: {len(a)} member(s)"
        if a != b:
            detail += f": only the scaler has {sorted(a - b)}, only lb has {sorted(b - a)}"
        self.point("lb and scaler agree on membership", a == b, detail)

    def orphans(self, pids: Sequence[int], containers: Sequence[str], what: str) -> None:
        ok = not pids and not containers
        detail = what
        if pids:
            detail += f": {len(pids)} tagged process(es) left: " + "; ".join(
                f"{p} {' '.join(cmdline(p))[:80]}" for p in pids[:4]
            )
        if containers:
            detail += f": {len(containers)} labelled container(s) left: {containers[:4]}"
        self.point("no orphan process or container", ok, detail)

    # -- the end --------------------------------------------------------------------------

    def summary(self, records: Sequence[Record], ops: Sequence[ApiOp]) -> str:
        kinds = Counter(r.outcome for r in records if r.failed)
        lines = [
            f"== chaos {self.family}, seed {self.seed} "
            f"(replay: CHAOS_SEED={self.seed} pytest -s tests/chaos -k {self.family})",
            "schedule:",
            *(f"  {k + 1}. {s.describe()}" for k, s in enumerate(self.steps)),
            "incidents:",
            *(f"  {i.describe(self.t0)}" for i in self.incidents),
        ]
        if self.notes:
            lines += ["notes:", *(f"  {n}" for n in self.notes)]
        new_conns = len({r.conn for r in records})
        lines.append(
            f"requests: {len(records)} on {new_conns} connection(s), "
            f"{sum(r.method == 'POST' for r in records)} POST; failed {sum(kinds.values())}"
            + (": " + ", ".join(f"{k} {v}" for k, v in sorted(kinds.items())) if kinds else "")
        )
        ok = sorted(r.end - r.start for r in records if not r.failed)
        if ok:
            slowest = max((r for r in records if not r.failed), key=lambda r: r.end - r.start)
            lines.append(
                f"latency of the answered: p50 {_ms(ok, 0.5)}, p99 {_ms(ok, 0.99)}, max "
                f"{_ms(ok, 1.0)} (from {slowest.start - self.t0:.2f}s, slot {slowest.slot})"
            )
        if ops:
            oc = Counter(o.outcome for o in ops)
            lines.append(
                f"api calls: {len(ops)} ("
                + ", ".join(f"{k} {v}" for k, v in sorted(oc.items()))
                + ")"
            )
        lines.append("invariants:")
        for v in self.verdicts.values():
            mark = "n/a " if v.ok is None else ("PASS" if v.ok else "FAIL")
            lines.append(f"  [{mark}] {v.name}: {v.detail}")
        return "\n".join(lines)

    def finish(self, records: Sequence[Record], ops: Sequence[ApiOp]) -> None:
        text = self.summary(records, ops)
        print("\n" + text, flush=True)
        failed = [v.name for v in self.verdicts.values() if v.ok is False]
        kinds = Counter(r.outcome for r in records if r.failed)
        n_pass = sum(v.ok is True for v in self.verdicts.values())
        n_na = sum(v.ok is None for v in self.verdicts.values())
        SUMMARIES.append(
            f"{self.family} seed {self.seed}: {len(self.steps)} steps, {len(records)} requests, "
            f"failed {sum(kinds.values())}"
            + (" (" + ", ".join(f"{k} {v}" for k, v in kinds.most_common()) + ")" if kinds else "")
            + (f"; api {dict(Counter(o.outcome for o in ops))}" if ops else "")
            + f"; invariants {n_pass} pass, {len(failed)} FAIL, {n_na} n/a"
            + (f": {'; '.join(failed)}" if failed else "")
            + f"; {time.monotonic() - self.t0:.0f}s"
        )
        assert not failed, f"seed {self.seed}: invariant(s) failed: {failed}\n{text}"


def _held_text(i: Incident, rs: Sequence[Record]) -> str:
    """How the failures of a kill split between the connections it held and later ones."""
    if i.held is None:
        return ""
    on_held = sum(r.lport in i.held for r in rs)
    text = f", {on_held} on the {len(i.held)} connection(s) it held"
    if on_held < len(rs):
        first = sum(r.nth == 0 for r in rs if r.lport not in i.held)
        text += (
            f", {len(rs) - on_held} on connections it did not hold at the signal "
            f"({first} of them at their first request)"
        )
    return text


def _ms(sorted_values: Sequence[float], q: float) -> str:
    k = min(len(sorted_values) - 1, int(q * len(sorted_values)))
    return f"{sorted_values[k] * 1000:.0f} ms"


def _kinds(rs: Sequence[Record]) -> str:
    return ", ".join(f"{k} {v}" for k, v in Counter(r.outcome for r in rs).most_common())


def new_tag() -> str:
    return uuid.uuid4().hex[:12]

"""The ``process`` provider: each member is a local process, started from a command template.

It works on any Linux machine, which makes it the embedded default and the demo's provider.

Theory of operation
-------------------
A member is started with ``posix_spawn`` in a session of its own (``setsid``), through a
one-line ``/bin/sh`` that changes to ``cwd`` and ``exec``\\ s the command, so the member keeps
the pid it was given. Being in its own session, it is not in the scaler's process group: a
Ctrl-C or a SIGTERM to the scaler does not reach it, and it keeps running when the scaler
exits or is killed. Its output goes to ``log_dir/POOL-PORT.log``.

Members are remembered in a small JSON state file (``state_file``): pid, port, command line,
the kernel's start time of the process and the boot id. The file is written (atomically)
as soon as a member is spawned, before anything else can happen to the scaler, so no member
is ever started without being on record. A restarted scaler reads it and adopts every member
that is still alive and still *ours*: the pid exists, is not a zombie, has the recorded start
time (``/proc/PID/stat`` field 22: a reused pid has another) and runs the recorded command.
Anything else is reported dead, never signalled.

Stopping sends SIGTERM to the member's process group, waits ``grace``, then SIGKILL.
While the scaler that started a member runs, it is that member's parent and reaps it; members
adopted after a restart are reaped by init.

The provider polls its members twice a second and reports deaths through ``events()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shlex
import signal
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson

from scaler.config import ProcessSettings, parse_port_range
from scaler.providers.base import (
    CpuSample,
    Member,
    MemberGone,
    ProviderError,
    pick_port,
    wait_listening,
)

log = logging.getLogger("scaler.process")

POLL = 0.5  # seconds between liveness checks (death notice)
_SHELL = 'cd -- "$0" || exit 126; exec "$@"'
_CLK_TCK = os.sysconf("SC_CLK_TCK")
_LOG_TAIL = 600  # bytes of a failed member's output quoted in the error


@dataclass
class Record:
    id: str
    pid: int
    port: int
    address: str
    cmdline: list[str]
    start_ticks: int
    started: float  # wall clock
    log: str


def boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def proc_stat(pid: int) -> tuple[str, int, float] | None:
    """(state, start time in clock ticks since boot, CPU seconds) of a pid, or None."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may contain spaces and parentheses.
    fields = raw[raw.rindex(b")") + 2 :].split()
    state = fields[0].decode()
    utime, stime, starttime = int(fields[11]), int(fields[12]), int(fields[19])
    return state, starttime, (utime + stime) / _CLK_TCK


def proc_cmdline(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return [part.decode(errors="replace") for part in raw.split(b"\0")[:-1]]


def describe_status(status: int) -> str:
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = str(sig)
        return f"killed by {name}"
    return f"exited with status {os.waitstatus_to_exitcode(status)}"


def render(template: str, values: dict[str, str]) -> list[str]:
    """Split like a shell, then fill the placeholders into each word (so a value with
    spaces stays one argument)."""
    out = []
    for word in shlex.split(template):
        for key, value in values.items():
            word = word.replace("{" + key + "}", value)
        out.append(word)
    return out


class ProcessProvider:
    kind = "process"

    def __init__(
        self,
        pool: str,
        settings: ProcessSettings,
        *,
        state_file: Path,
        log_dir: Path,
        cwd: Path,
        start_timeout: float,
    ) -> None:
        self.pool = pool
        self.settings = settings
        self.state_file = state_file
        self.log_dir = log_dir
        self.cwd = cwd
        self.start_timeout = start_timeout
        self.port_lo, self.port_hi = parse_port_range(settings.port_range)
        self.records: dict[str, Record] = {}
        self._children: dict[int, int | None] = {}  # pids we spawned -> wait status once reaped
        self._last_port = self.port_hi
        self._boot = boot_id()

    # -- lifecycle ------------------------------------------------------------------------------

    async def open(self) -> None:
        try:
            raw = self.state_file.read_bytes()
        except FileNotFoundError:
            return
        except OSError as exc:
            raise ProviderError(f"cannot read {self.state_file}: {exc.strerror}") from None
        try:
            doc = orjson.loads(raw)
            if doc.get("boot_id") and doc["boot_id"] != self._boot:
                log.warning(
                    "%s: written before the machine restarted; its members are gone",
                    self.state_file,
                )
                return
            for item in doc.get("members", []):
                rec = Record(**item)
                self.records[rec.id] = rec
                self._last_port = rec.port
        except (orjson.JSONDecodeError, TypeError, AttributeError, KeyError) as exc:
            aside = self.state_file.with_name(self.state_file.name + f".bad-{int(time.time())}")
            os.replace(self.state_file, aside)
            log.error(
                "%s is not a members file (%s); moved it to %s and started with no members",
                self.state_file,
                exc,
                aside,
            )

    async def close(self) -> None:
        pass

    def _save(self) -> None:
        doc: dict[str, Any] = {
            "pool": self.pool,
            "boot_id": self._boot,
            "members": [asdict(r) for r in self.records.values()],
        }
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_name(self.state_file.name + ".tmp")
        with open(tmp, "wb") as fh:
            fh.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.state_file)

    # -- liveness -------------------------------------------------------------------------------

    def _reap(self, pid: int) -> int | None:
        """The wait status of a child of ours that exited (reaping it), else None."""
        if pid not in self._children:
            return None
        status = self._children[pid]
        if status is None:
            try:
                done, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                return None
            if done == 0:
                return None
            self._children[pid] = status
        return status

    def why_gone(self, rec: Record, starting: bool = False) -> str | None:
        """None while the member is alive and ours; otherwise what happened to it."""
        status = self._reap(rec.pid)
        if status is not None:
            return describe_status(status)
        st = proc_stat(rec.pid)
        if st is None:
            return "gone (its process no longer exists)"
        state, ticks, _ = st
        if state in ("Z", "X"):
            return "exited"
        if ticks != rec.start_ticks:
            return f"gone (pid {rec.pid} now belongs to another process)"
        cmdline = proc_cmdline(rec.pid)
        # Until the shell has exec'd the command, the member is the shell (or, right after
        # the spawn, has no command line yet).
        early = starting and (not cmdline or cmdline[0] == "/bin/sh")
        if cmdline != rec.cmdline and not early:
            return f"gone (pid {rec.pid} now runs something else: {shlex.join(cmdline or [])})"
        return None

    def _member(self, rec: Record) -> Member:
        why = self.why_gone(rec)
        return Member(
            id=rec.id,
            name=f"{self.pool}-{rec.port} (pid {rec.pid})",
            address=rec.address,
            created=rec.started,
            running=why is None,
            detail=why or "",
            info={"pid": str(rec.pid), "log": rec.log},
        )

    async def list(self) -> list[Member]:
        return [self._member(r) for r in self.records.values()]

    async def events(self) -> AsyncIterator[MemberGone]:
        reported: set[str] = set()
        while True:
            await asyncio.sleep(POLL)
            for rec in list(self.records.values()):
                if rec.id in reported:
                    continue
                why = self.why_gone(rec, starting=True)
                if why is not None:
                    reported.add(rec.id)
                    yield MemberGone(rec.id, why)
            reported &= set(self.records)

    async def cpu(self, member: Member) -> CpuSample | None:
        rec = self.records.get(member.id)
        if rec is None or self.why_gone(rec) is not None:
            return None
        st = proc_stat(rec.pid)
        return None if st is None else CpuSample(st[2], time.monotonic())

    # -- create / stop --------------------------------------------------------------------------

    async def create(self) -> Member:
        s = self.settings
        taken = {r.port for r in self.records.values()}
        port = pick_port(self.port_lo, self.port_hi, taken, self._last_port, s.host)
        if port is None:
            raise ProviderError(
                f"no free port in port_range {s.port_range}: {len(taken)} held by members, "
                "the others are in use by other programs; widen port_range"
            )
        self._last_port = port
        values = {"port": str(port), "host": s.host, "pool": self.pool, "python": sys.executable}
        argv = render(s.command, values)
        env = {**os.environ, **s.env, "PORT": str(port), "LB_POOL": self.pool}
        self.log_dir.mkdir(parents=True, exist_ok=True)
        logpath = self.log_dir / f"{self.pool}-{port}.log"
        try:
            # posix_spawn returns once the child exists (it does not wait for it).
            pid = os.posix_spawn(  # noqa: ASYNC221
                "/bin/sh",
                ["/bin/sh", "-c", _SHELL, str(self.cwd), *argv],
                env,
                file_actions=[
                    (os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0),
                    (
                        os.POSIX_SPAWN_OPEN,
                        1,
                        str(logpath),
                        os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
                        0o644,
                    ),
                    (os.POSIX_SPAWN_DUP2, 1, 2),
                ],
                setsid=True,
            )
        except OSError as exc:
            raise ProviderError(f"cannot start {shlex.join(argv)}: {exc}") from None
        self._children[pid] = None
        st = proc_stat(pid)
        rec = Record(
            id=f"{self.pool}-{port}-{pid}",
            pid=pid,
            port=port,
            address=f"{s.host}:{port}",
            cmdline=argv,
            start_ticks=st[1] if st is not None else -1,
            started=time.time(),
            log=str(logpath),
        )
        # On record before anything else can happen: a scaler killed now still adopts it.
        self.records[rec.id] = rec
        self._save()
        try:
            await wait_listening(
                s.host, port, self.start_timeout, lambda: self.why_gone(rec, starting=True)
            )
        except BaseException as exc:
            await self._kill(rec, grace=0.0)
            self._forget(rec)
            if not isinstance(exc, ProviderError):
                raise
            tail = _tail(logpath)
            raise ProviderError(
                f"{shlex.join(argv)}: {exc}" + (f"; its output ends with: {tail}" if tail else "")
            ) from None
        return self._member(rec)

    async def stop_and_remove(self, member: Member, grace: float) -> None:
        rec = self.records.get(member.id)
        if rec is None:
            return
        await self._kill(rec, grace=grace)
        self._forget(rec)

    def _forget(self, rec: Record) -> None:
        self.records.pop(rec.id, None)
        self._save()
        if self._children.get(rec.pid) is not None:
            del self._children[rec.pid]

    async def _kill(self, rec: Record, grace: float) -> None:
        """SIGTERM the member's process group, SIGKILL after ``grace``; never signal a pid
        that is no longer ours."""
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
            if grace == 0.0 and sig is signal.SIGTERM:
                continue
            if self.why_gone(rec, starting=True) is not None:
                return
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(rec.pid, sig)
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                if self.why_gone(rec, starting=True) is not None:
                    return
                await asyncio.sleep(0.02)
            if sig is signal.SIGTERM:
                log.warning(
                    "%s (pid %d) ignored SIGTERM for %gs; killing it", rec.id, rec.pid, grace
                )


def _tail(path: Path) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - _LOG_TAIL))
            text = fh.read().decode(errors="replace")
    except OSError:
        return ""
    return " | ".join(line.strip() for line in text.strip().splitlines()[-5:])

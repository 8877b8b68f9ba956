"""The ``process`` provider: each member is a local process, started from a command template.

It works on any Linux machine, which makes it the embedded default and the demo's provider.

Theory of operation
-------------------
A member is started with ``posix_spawn`` in a session of its own (``setsid``), through a
one-line ``/bin/sh`` that changes to ``cwd`` and ``exec``\\ s the command, so the member keeps
the pid it was given. Being in its own session, it is not in the scaler's process group: a
Ctrl-C or a SIGTERM to the scaler does not reach it, and it keeps running when the scaler
exits or is killed. Its output goes to ``log_dir/POOL-PORT.log``.

Members are remembered in a small JSON state file (``state_file``). A member is on record
*before* it exists: ``create()`` writes its port, command line and a fresh run id (the file
is replaced atomically: temp file, fsync, rename, fsync of the folder), then spawns it with
the run id and the members file's path in its environment (``LB_SCALER_RUN_ID``,
``LB_SCALER_MEMBERS_FILE``, readable in ``/proc/PID/environ``), then records its pid and the
kernel's start time of the process. So a scaler killed at any moment leaves at most a record
without a pid, never a process without a record.

A restarted scaler (and ``stop-all``) reads the file and scans ``/proc`` for session leaders
whose environment names this members file. A record without a pid gets the pid that carries
its run id (no such process: it never started, or already exited, and is reported dead); a
process whose run id is on no record (its record was lost: a members file moved aside as
unreadable, or deleted) is stopped. It then adopts every member that is still alive and still
*ours*: the pid exists, is not a zombie, has the recorded start time (``/proc/PID/stat``
field 22: a reused pid has another) and runs the recorded command (or still the launching
shell, just before its ``exec``). Anything else is reported dead, never signalled.

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
import secrets
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
_LAUNCHER = ["/bin/sh", "-c", _SHELL]  # then the folder, then the member's command line
_CLK_TCK = os.sysconf("SC_CLK_TCK")
_LOG_TAIL = 600  # bytes of a failed member's output quoted in the error
STRAY_GRACE = 5.0  # seconds between SIGTERM and SIGKILL for a process found off the record
# In every member's environment: how a restarted scaler finds what it may have started.
RUN_ID_ENV = "LB_SCALER_RUN_ID"
MEMBERS_FILE_ENV = "LB_SCALER_MEMBERS_FILE"


@dataclass
class Record:
    id: str
    # None from the record's first write until the spawn returned: never 0 or -1, which
    # kill(2) and killpg(3) take as "my group" or "everyone".
    pid: int | None
    port: int
    address: str
    cmdline: list[str]
    start_ticks: int  # -1 while pid is None
    started: float  # wall clock
    log: str
    run_id: str = ""  # in the member's environment (LB_SCALER_RUN_ID); "" from older scalers


def boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _stat_fields(pid: int) -> list[bytes] | None:
    """The fields of ``/proc/PID/stat`` after the command name (field 3, the state, first)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may contain spaces and parentheses.
    return raw[raw.rindex(b")") + 2 :].split()


def proc_stat(pid: int) -> tuple[str, int, float] | None:
    """(state, start time in clock ticks since boot, CPU seconds) of a pid, or None."""
    fields = _stat_fields(pid)
    if fields is None:
        return None
    state = fields[0].decode()
    utime, stime, starttime = int(fields[11]), int(fields[12]), int(fields[19])
    return state, starttime, (utime + stime) / _CLK_TCK


def find_members(members_file: str) -> dict[int, str]:
    """pid -> run id of every live session leader whose environment names ``members_file``:
    the members (or launching shells) that scalers with this file started. Session leaders
    only: a member's own children inherit its environment but not its session."""
    want = f"{MEMBERS_FILE_ENV}={members_file}".encode()
    run_key = f"{RUN_ID_ENV}=".encode()
    found: dict[int, str] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        fields = _stat_fields(pid)
        if fields is None or fields[0] in (b"Z", b"X") or int(fields[3]) != pid:
            continue
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if want not in environ:
            continue
        for var in environ:
            if var.startswith(run_key):
                found[pid] = var[len(run_key) :].decode(errors="replace")
    return found


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
        self._marker = str(state_file.absolute())  # in the members' environment
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
        self._load()
        await self._find_unrecorded()

    def _load(self) -> None:
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
                "%s is not a members file (%s); moved it to %s and started with no members "
                "(processes it started are found by their environment and stopped)",
                self.state_file,
                exc,
                aside,
            )
            self.records.clear()

    async def _find_unrecorded(self) -> None:
        """Complete the records an interrupted ``create()`` left without a pid, and stop the
        processes started with this members file that are on no record."""
        found = await asyncio.to_thread(find_members, self._marker)
        by_run = {r.run_id: r for r in self.records.values() if r.run_id}
        strays: list[Record] = []
        changed = False
        for pid, run_id in sorted(found.items()):
            rec = by_run.get(run_id)
            if rec is not None and rec.pid is None:
                st = proc_stat(pid)
                if st is None:
                    continue  # it just exited: reported dead below, like one never started
                rec.pid, rec.start_ticks = pid, st[1]
                changed = True
                log.info(
                    "%s: found pid %d by its run id %s: its scaler stopped before recording it",
                    rec.id,
                    pid,
                    run_id,
                )
            elif rec is None:
                st = proc_stat(pid)
                if st is None:
                    continue
                cmdline = proc_cmdline(pid) or []
                if cmdline[:3] == _LAUNCHER:
                    cmdline = cmdline[4:]  # not exec'd yet: what it is about to run
                strays.append(
                    Record(
                        id=f"stray-{pid}",
                        pid=pid,
                        port=0,
                        address="",
                        cmdline=cmdline,
                        start_ticks=st[1],
                        started=0.0,
                        log="",
                        run_id=run_id,
                    )
                )
        if changed:
            try:
                self._save()
            except OSError as exc:  # the records in memory are complete; the next save writes them
                log.error("cannot write %s: %s", self.state_file, exc.strerror)
        for stray in strays:
            log.warning(
                "pid %d (%s) was started by a scaler with %s (run id %s) but is on no record; "
                "stopping it",
                stray.pid,
                shlex.join(stray.cmdline),
                self.state_file,
                stray.run_id,
            )
            await self._kill(stray, grace=STRAY_GRACE)

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
        # The rename itself is durable once the folder is synced.
        dfd = os.open(self.state_file.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

    # -- liveness -------------------------------------------------------------------------------

    def _reap(self, pid: int | None) -> int | None:
        """The wait status of a child of ours that exited (reaping it), else None."""
        if pid is None or pid not in self._children:
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
        if rec.pid is None:
            return (
                "never started, or exited before it was found: the scaler starting it "
                "stopped first, and no process carries its run id"
            )
        status = self._reap(rec.pid)
        if status is not None:
            return describe_status(status)
        st = proc_stat(rec.pid)
        if st is None:
            return "gone (its process no longer exists)"
        state, ticks, _ = st
        if state in ("Z", "X"):
            # It exited between the waitpid above and this look: reap it now for its status.
            status = self._reap(rec.pid)
            return describe_status(status) if status is not None else "exited"
        if ticks != rec.start_ticks:
            return f"gone (pid {rec.pid} now belongs to another process)"
        cmdline = proc_cmdline(rec.pid)
        # Until the shell has exec'd the command, the member is the launching shell (or, right
        # after the spawn, has no command line yet).
        launcher = cmdline is not None and cmdline[:3] == _LAUNCHER
        early = launcher and cmdline is not None and cmdline[4:] == rec.cmdline
        early = early or (starting and (not cmdline or cmdline[0] == "/bin/sh"))
        if cmdline != rec.cmdline and not early:
            return f"gone (pid {rec.pid} now runs something else: {shlex.join(cmdline or [])})"
        return None

    def _member(self, rec: Record) -> Member:
        why = self.why_gone(rec)
        return Member(
            id=rec.id,
            name=f"{self.pool}-{rec.port} " + (f"(pid {rec.pid})" if rec.pid else "(no pid)"),
            address=rec.address,
            created=rec.started,
            running=why is None,
            detail=why or "",
            info={"pid": str(rec.pid or ""), "log": rec.log},
        )

    async def list(self) -> list[Member]:
        return [self._member(r) for r in self.records.values()]

    async def events(self) -> AsyncIterator[MemberGone]:
        reported: set[str] = set()
        while True:
            await asyncio.sleep(POLL)
            for rec in list(self.records.values()):
                if rec.id in reported or rec.pid is None:
                    continue  # no pid: being started (or dead, and list() reports it)
                why = self.why_gone(rec, starting=True)
                if why is not None:
                    reported.add(rec.id)
                    yield MemberGone(rec.id, why)
            reported &= set(self.records)

    async def cpu(self, member: Member) -> CpuSample | None:
        rec = self.records.get(member.id)
        if rec is None or rec.pid is None or self.why_gone(rec) is not None:
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
        run_id = secrets.token_hex(6)
        env = {
            **os.environ,
            **s.env,
            "PORT": str(port),
            "LB_POOL": self.pool,
            RUN_ID_ENV: run_id,
            MEMBERS_FILE_ENV: self._marker,
        }
        self.log_dir.mkdir(parents=True, exist_ok=True)
        logpath = self.log_dir / f"{self.pool}-{port}.log"
        rec = Record(
            id=f"{self.pool}-{port}-{run_id}",
            pid=None,
            port=port,
            address=f"{s.host}:{port}",
            cmdline=argv,
            start_ticks=-1,
            started=time.time(),
            log=str(logpath),
            run_id=run_id,
        )
        # On record before it exists: a scaler killed from here on leaves a record that the
        # next one completes by the run id (or reports dead), never an unknown process.
        self.records[rec.id] = rec
        try:
            self._save()
        except OSError as exc:
            self.records.pop(rec.id, None)
            raise ProviderError(
                f"cannot write the members file {self.state_file}: {exc.strerror}; "
                "nothing was started (a member must be on record before it runs)"
            ) from None
        try:
            # posix_spawn returns once the child exists (it does not wait for it).
            pid = os.posix_spawn(  # noqa: ASYNC221
                "/bin/sh",
                [*_LAUNCHER, str(self.cwd), *argv],
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
            self._forget(rec)
            raise ProviderError(f"cannot start {shlex.join(argv)}: {exc}") from None
        self._children[pid] = None
        st = proc_stat(pid)
        rec.pid, rec.start_ticks = pid, (st[1] if st is not None else -1)
        try:
            self._save()
        except OSError as exc:  # the record without its pid still finds it (run id)
            log.error("cannot record pid %d in %s: %s", pid, self.state_file, exc.strerror)
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
        if rec.pid is not None and self._children.get(rec.pid) is not None:
            del self._children[rec.pid]

    async def _kill(self, rec: Record, grace: float) -> None:
        """SIGTERM the member's process group, SIGKILL after ``grace``; never signal a pid
        that is no longer ours."""
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
            if grace == 0.0 and sig is signal.SIGTERM:
                continue
            if rec.pid is None or rec.pid <= 1 or self.why_gone(rec, starting=True) is not None:
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

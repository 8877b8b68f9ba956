"""Processes for the benchmarks: start and stop them, find free ports, measure their memory.

Everything here is loopback-only and Linux-only (memory comes from ``/proc``). Every process
started through :class:`Procs` is stopped by :meth:`Procs.stop_all`, which the suite calls in a
``finally``; a process that ignores SIGTERM for 10 s is killed.
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import socket
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: ``benchmarks.run --pin``: the proxy under test runs alone on the last CPU, and everything
#: else (wrk, ab, h2load, the backend nginx) on the others. Off by default. Without it the
#: kernel places the proxy, wrk and the backend on 2 cores as it likes, and with
#: ``Connection: close`` a run where the proxy shares a core with wrk is much slower than one
#: where it does not (benchmarks/RESULTS.md, session 11).
PIN = False


def pinned(args: list[str], role: str, workers: int = 1) -> list[str]:
    """``args`` under ``taskset`` when :data:`PIN` is on: ``role`` "proxy" (one worker or
    thread: the last CPU; more: not pinned) or "other" (every CPU but the last)."""
    n = os.cpu_count() or 1
    if not PIN or n < 2:
        return args
    if role == "proxy":
        if workers != 1:
            return args
        cpus = str(n - 1)
    else:
        cpus = "0" if n == 2 else f"0-{n - 2}"
    return ["taskset", "-c", cpus, *args]


def raise_nofile() -> int:
    """Raise the soft open-file limit to the hard one (children inherit it); return it."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def free_ports(n: int) -> list[int]:
    """``n`` distinct free TCP ports on 127.0.0.1 (held together, so they differ)."""
    socks: list[socket.socket] = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def free_port() -> int:
    return free_ports(1)[0]


def wait_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listening on 127.0.0.1:{port} after {timeout:g}s")


def wait_log(path: Path, text: str, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    """Wait until ``text`` appears in a process's log (lb prints a banner once it is ready)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            if text in path.read_text(errors="replace"):
                return
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}:\n{tail(path)}")
        time.sleep(0.05)
    raise RuntimeError(f"{text!r} did not appear in {path} within {timeout:g}s")


def tail(path: Path, lines: int = 15) -> str:
    """The end of a log file, for error messages (the temporary directory is gone later)."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"(no log at {path})"


class Procs:
    """The processes one piece of the suite started; stop them all with :meth:`stop_all`."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, args: list[str], log: Path, cwd: Path = ROOT) -> subprocess.Popen[bytes]:
        with log.open("ab") as fh:
            p = subprocess.Popen(args, stdout=fh, stderr=subprocess.STDOUT, cwd=cwd)
        self.procs.append(p)
        return p

    def stop_all(self) -> None:
        for p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                # Children first (lb workers, nginx workers), then the parent.
                for child in descendants(p.pid):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(child, signal.SIGKILL)
                p.kill()
                p.wait()
        self.procs.clear()


# -- memory ----------------------------------------------------------------------------------


def _parent_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue  # exited meanwhile
        # The command name may hold spaces and parentheses: parse after the last ')'.
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    return children


def descendants(pid: int) -> list[int]:
    children = _parent_map()
    out: list[int] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def rss_kib(pid: int) -> int:
    """Resident set size of one process in KiB (0 once it has exited)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree_rss_kib(pid: int) -> int:
    """RSS of a process and all its descendants, in KiB.

    Pages shared between the processes of a tree (nginx's master and worker, lb's supervisor
    and workers) are counted once per process, as ``ps`` and ``top`` count them.
    """
    return sum(rss_kib(p) for p in (pid, *descendants(pid)))

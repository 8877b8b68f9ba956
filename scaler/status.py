"""The scaler's files beside lb's state file: the lock and the status file, and the text of
``lb-scaler status``.

* ``scaler.lock`` is held (``flock``) by the running scaler and holds its pid: a second
  scaler on the same config refuses to start (it would duplicate members), and ``status``
  tells a running scaler from a dead one (the kernel drops the lock when a process dies,
  even by ``kill -9``).
* ``scaler.json`` is rewritten (atomically) after every tick: per pool, the members, the
  current and desired counts, the last decisions with their reasons and the last actions, and
  the ids of members whose removal is under way (a restarted scaler finishes those).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from pathlib import Path
from typing import Any

import orjson

LOCK = "scaler.lock"
STATUS = "scaler.json"


class AlreadyRunning(Exception):
    def __init__(self, pid: int | None, path: Path) -> None:
        who = f"pid {pid}" if pid else "another process"
        super().__init__(
            f"another lb-scaler ({who}) is running with this config (lock {path}); stop it "
            "first: two scalers would each start members"
        )
        self.pid = pid


class Lock:
    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / LOCK
        self.fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise AlreadyRunning(holder(self.path.parent), self.path) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing drops the flock
            self.fd = None


def holder(run_dir: Path) -> int | None:
    """The pid of the running scaler, or None when none holds the lock."""
    path = run_dir / LOCK
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.read(fd, 64).decode(errors="replace").strip()
            return int(text) if text.isdigit() else 0
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def write(run_dir: Path, doc: dict[str, Any]) -> None:
    path = run_dir / STATUS
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2, default=str))
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def read(run_dir: Path) -> dict[str, Any] | None:
    try:
        doc = orjson.loads((run_dir / STATUS).read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    return doc if isinstance(doc, dict) else None


def resume_intents(doc: dict[str, Any] | None, pool: str) -> set[str]:
    if not doc:
        return set()
    with contextlib.suppress(AttributeError, TypeError):
        return {str(x) for x in doc.get("pools", {}).get(pool, {}).get("removing", [])}
    return set()


def _clock(t: float | None) -> str:
    return time.strftime("%H:%M:%S", time.localtime(t)) if t else "-"


def _ago(t: float | None) -> str:
    if not t:
        return "never"
    s = max(0.0, time.time() - t)
    return f"{s:.0f}s ago" if s < 120 else f"{s / 60:.0f}m ago"


def _lb_state(lb: dict[str, Any]) -> str:
    """``in step`` / ``OUT OF STEP since T: why`` / ``UNREACHABLE since T: why``."""
    state = lb.get("state")
    if state == "in step":
        return "in step" + (f" (resynced {lb['resyncs']}x)" if lb.get("resyncs") else "")
    why = f": {lb['reason']}" if lb.get("reason") else ""
    return f"{str(state).upper()} since {_clock(lb.get('since'))} ({_ago(lb.get('since'))}){why}"


def format_status(doc: dict[str, Any] | None, running_pid: int | None, config: str) -> str:
    if doc is None:
        if running_pid:
            return f"lb-scaler: running (pid {running_pid}), no status written yet; config {config}"
        return f"lb-scaler: has not run with {config} (no status file)"
    lines = []
    if running_pid:
        lines.append(
            f"lb-scaler: running (pid {running_pid}) since {_clock(doc.get('started'))}, "
            f"updated {_ago(doc.get('updated'))}; config {doc.get('config', config)}"
        )
    else:
        pools = (doc.get("pools") or {}).values()
        left = sum(len(p.get("members") or []) for p in pools)
        lines.append(
            f"lb-scaler: NOT running (pid {doc.get('pid')} stopped; last update "
            f"{_ago(doc.get('updated'))})."
            + (" Its members keep running; as of then:" if left else " It left no members.")
        )
    for name, p in (doc.get("pools") or {}).items():
        desired = p.get("desired")
        lines.append("")
        lines.append(
            f"pool {name}: {p.get('current')} member(s), desired "
            f"{desired if desired is not None else '?'} (min {p.get('min')}, max {p.get('max')})"
            f"; {p.get('metric')} target {p.get('target'):g}, every {p.get('interval'):g}s"
        )
        lines.append(f"  provider: {p.get('settings')}")
        if p.get("demand") is not None:
            lines.append(
                f"  demand (in flight + queued + held): {p['demand']}"
                + ("; PANIC: no scale-down" if p.get("panic") else "")
            )
        lbs = p.get("lbs") or []
        if len(lbs) > 1 or any(lb.get("name") != "local" for lb in lbs):
            lines.append("  lb instances:")
            lines += [f"    {lb.get('name')} ({lb.get('target')}): {_lb_state(lb)}" for lb in lbs]
        elif p.get("lb_unreachable"):
            lines.append(f"  lb: UNREACHABLE: {p['lb_unreachable']}")
        if p.get("last_error"):
            lines.append(f"  last error: {p['last_error']}")
        if p.get("reason"):
            lines.append(f"  last decision: {p['reason']}")
        members = p.get("members") or []
        if members:
            rows: list[tuple[str, ...]] = [
                ("MEMBER", "ADDRESS", "STARTED", "LB", "IN-FLIGHT", "WHERE")
            ]
            for m in members:
                # Where it runs, when the provider says (Swarm: node, task, slot).
                where = " ".join(f"{k}={m[k]}" for k in ("node", "task", "slot") if m.get(k))
                lb_state = (
                    f"{m.get('admin')}/{m.get('health')}"
                    if m.get("registered") and m.get("admin")
                    else "registered"
                    if m.get("registered")
                    else "not registered"
                )
                on = m.get("lbs")
                if on is not None and len(lbs) > 1 and len(on) < len(lbs):
                    lb_state += f" (on {', '.join(on) or 'none'})"
                if m.get("removing"):
                    lb_state += " (removing)"
                in_flight = m.get("in_flight")
                rows.append(
                    (
                        f"{m.get('name')}",
                        str(m.get("address")),
                        _clock(m.get("created")),
                        lb_state,
                        "-" if in_flight is None else str(in_flight),
                        where,
                    )
                )
            if not any(r[-1] for r in rows[1:]):
                rows = [r[:-1] for r in rows]  # no provider said where its members run
            widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
            lines += [
                "  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                for r in rows
            ]
        else:
            lines.append("  no members")
        decisions = p.get("decisions") or []
        if decisions:
            lines.append("  recent decisions:")
            lines += [f"    {_clock(e.get('time'))}  {e.get('message')}" for e in decisions[-8:]]
        actions = p.get("actions") or []
        if actions:
            lines.append("  recent actions:")
            lines += [f"    {_clock(e.get('time'))}  {e.get('message')}" for e in actions[-8:]]
    return "\n".join(lines)

"""``kill -9`` of lb-scaler at the worst moment of a start leaves no orphan (issue 14).

The end-to-end test kills the scaler the instant its member process appears: it polls the
scaler's children in ``/proc`` and SIGKILLs it as soon as there is one. ``posix_spawn`` makes
the child visible before it returns (it waits for the exec), so the scaler is stopped in the
middle of the spawn, before any line after it runs. Ten times, each scaler asked for one more
member than the last. Then a scaler must adopt all ten, and ``stop-all`` must stop all ten.
The orphans are counted by a variable in their environment (``[scalers.process] env``), not
by the members file, so that a process missing from the file is counted too.

The test needs nothing of the fix (no hook, no new name), so it runs unchanged on the code
before it. ``test_scaler_process_record.py`` covers the other moments with the provider alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from lb.control.client import ControlClient
from tests.helpers import ROOT, ProcessGroup, to_toml
from tests.integration.test_scaler import config, log_events, port_block, wait_for

KILLS = 10


def tagged(tag: str) -> list[int]:
    """Live (not zombie) processes with ``LB_TEST_TAG=tag`` in their environment."""
    want = f"LB_TEST_TAG={tag}".encode()
    out = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            if want not in Path(entry.path, "environ").read_bytes().split(b"\0"):
                continue
            state = Path(entry.path, "stat").read_bytes().rsplit(b")", 1)[1].split()[0]
        except OSError:
            continue
        if state not in (b"Z", b"X"):
            out.append(int(entry.name))
    return sorted(out)


def kill_tagged(tag: str) -> None:
    for pid in tagged(tag):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


async def managed_backends(sock: Path) -> list[str]:
    async with ControlClient(sock) as c:
        view = await c.backends("web")
    return [b.address for b in view.backends if b.metadata.get("managed-by") == "scaler"]


def any_child(pid: int) -> list[int]:
    """The children of every thread of ``pid``."""
    out: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.scandir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError):
                out += [int(x) for x in Path(task.path, "children").read_text().split()]
    return out


@pytest.fixture
def tag() -> Iterator[str]:
    value = uuid.uuid4().hex[:12]
    try:
        yield value
    finally:
        kill_tagged(value)  # whatever the outcome: no orphan outlives the test


def test_kill_9_right_after_a_spawn_ten_times_leaves_no_orphan(
    procs: ProcessGroup, tmp_path: Path, tag: str
) -> None:
    cfg = config(
        min=1,
        max=KILLS,
        scale_down_stabilization="5m",
        process={"env": {"LB_TEST_TAG": tag}, "port_range": port_block(KILLS + 5)},
    )
    procs.lb(cfg)  # writes tmp_path / "lb.toml", which the scalers read
    path = tmp_path / "lb.toml"
    scaler_cmd = [sys.executable, "-m", "scaler", "-c", str(path)]
    t0 = time.monotonic()
    spawned: list[int] = []
    for k in range(1, KILLS + 1):
        cfg["scalers"][0]["min"] = k  # one more than the k - 1 the earlier scalers left
        path.write_text(to_toml(cfg))
        scaler = procs.spawn(f"scaler-{k}", scaler_cmd)
        deadline = time.monotonic() + 20
        kids: list[int] = []
        while not kids and scaler.popen.poll() is None and time.monotonic() < deadline:
            kids = any_child(scaler.pid)
            time.sleep(0.0002)  # the spawn-to-record window is wider: still hit every time
        scaler.popen.send_signal(signal.SIGKILL)
        scaler.popen.wait()
        assert kids, f"scaler {k} started no member:\n{scaler.output()[-2000:]}"
        spawned += kids
    # The last child may still be between its spawn and its exec (its environment not yet
    # the member's): give it a moment.
    deadline = time.monotonic() + 3
    while len(after_kills := tagged(tag)) < KILLS and time.monotonic() < deadline:
        time.sleep(0.02)

    # A scaler that wants exactly the ten adopts them all and starts none.
    adopter = procs.spawn("scaler-adopt", scaler_cmd)
    wait_for(
        lambda: any(e.get("event") == "scaler_decision" for e in log_events(adopter)),
        20,
        "a decision of the adopting scaler",
        adopter,
    )
    adopter.stop(signal.SIGTERM)
    started = [e for e in log_events(adopter) if e.get("event") == "scaler_member_started"]
    # Each scaler registered (adopted) the member of the one killed before it.
    adopted = {
        e["member"]
        for s in procs.procs
        if s.name.startswith("scaler")
        for e in log_events(s)
        if e.get("event") == "scaler_adopted"
    }
    registered = asyncio.run(managed_backends(tmp_path / "run" / "lb.sock"))

    stop_all = subprocess.run(
        [*scaler_cmd, "stop-all"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    deadline = time.monotonic() + 5  # SIGTERM'd members may take a moment to exit
    while (orphans := tagged(tag)) and time.monotonic() < deadline:
        time.sleep(0.05)
    elapsed = time.monotonic() - t0
    # How many kills left a record without its pid (the scaler died inside the spawn).
    by_run_id = sum(
        s.output().count("by its run id") for s in procs.procs if s.name.startswith("scaler")
    )
    print(
        f"\n{KILLS} kills ({by_run_id} left a record without its pid), adoption and stop-all "
        f"in {elapsed:.1f}s; {stop_all.stdout.strip()}"
    )

    assert orphans == [], (
        f"{len(orphans)} orphan(s) after stop-all (pids {orphans}); {len(after_kills)} "
        f"member process(es) were alive after the {KILLS} kills; stop-all said: "
        f"{stop_all.stdout.strip()} {stop_all.stderr.strip()[-500:]}"
    )
    assert stop_all.returncode == 0
    assert len(spawned) == KILLS and len(after_kills) == KILLS  # one member per killed scaler
    assert started == [] and len(adopted) == KILLS, adopter.output()[-3000:]
    assert len(registered) == KILLS
    assert f"{KILLS} member(s) stopped and removed" in stop_all.stdout

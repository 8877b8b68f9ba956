"""The process provider's record, at every moment a ``kill -9`` of the scaler can land
(issue 14): before the spawn (a record, no process), right after it (a record without its
pid), and a process started with this members file that is on no record. The end-to-end
test is ``test_scaler_orphans.py``."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from scaler.config import ProcessSettings
from scaler.providers.process import MEMBERS_FILE_ENV, RUN_ID_ENV, ProcessProvider, proc_stat
from tests.integration.test_scaler import port_block, wait_for
from tests.integration.test_scaler_orphans import kill_tagged

BACKEND = "{python} -m lb.demo_server --port {port} --name web-{port}"


@pytest.fixture
def tag() -> Iterator[str]:
    value = uuid.uuid4().hex[:12]
    try:
        yield value
    finally:
        kill_tagged(value)


def provider(tmp: Path, command: str = BACKEND, **env: str) -> ProcessProvider:
    settings = ProcessSettings(command=command, port_range=port_block(10), env=env)
    return ProcessProvider(
        "web",
        settings,
        state_file=tmp / "scaler-web.json",
        log_dir=tmp / "members",
        cwd=tmp,
        start_timeout=10.0,
    )


def members_doc(tmp: Path) -> dict[str, Any]:
    return dict(json.loads((tmp / "scaler-web.json").read_text()))


def environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(v.decode().partition("=")[::2] for v in raw.split(b"\0") if v)


def alive(pid: int) -> bool:
    st = proc_stat(pid)
    return st is not None and st[0] not in ("Z", "X")


async def test_a_member_is_on_record_before_it_runs_and_carries_its_run_id(
    tmp_path: Path, tag: str
) -> None:
    p = provider(tmp_path, LB_TEST_TAG=tag)
    await p.open()
    seen: list[dict[str, Any]] = []
    real_spawn = os.posix_spawn

    def spawn(*args: Any, **kw: Any) -> int:
        seen.extend(members_doc(tmp_path)["members"])  # what a kill -9 now would leave
        return real_spawn(*args, **kw)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(os, "posix_spawn", spawn)
        m = await p.create()
    (before,) = seen
    assert before["pid"] is None and before["run_id"] and before["id"] == m.id
    pid = int(m.info["pid"])
    env = environ(pid)
    assert env[RUN_ID_ENV] == before["run_id"]
    assert env[MEMBERS_FILE_ENV] == str(tmp_path / "scaler-web.json")
    (after,) = members_doc(tmp_path)["members"]
    assert after["pid"] == pid and after["start_ticks"] > 0
    await p.stop_and_remove(m, grace=5)


async def test_a_record_without_its_pid_is_completed_by_the_run_id(
    tmp_path: Path, tag: str
) -> None:
    p = provider(tmp_path, LB_TEST_TAG=tag)
    await p.open()
    m = await p.create()
    pid = int(m.info["pid"])
    # As a scaler killed right after the spawn leaves it: the record, without the pid.
    doc = members_doc(tmp_path)
    doc["members"][0].update(pid=None, start_ticks=-1)
    (tmp_path / "scaler-web.json").write_text(json.dumps(doc))

    again = provider(tmp_path, LB_TEST_TAG=tag)
    await again.open()
    (adopted,) = await again.list()
    assert adopted.id == m.id and adopted.running and adopted.info["pid"] == str(pid)
    assert members_doc(tmp_path)["members"][0]["pid"] == pid  # completed on disk too
    await again.stop_and_remove(adopted, grace=5)
    wait_for(lambda: not alive(pid), 5, f"pid {pid} stopped")
    assert members_doc(tmp_path)["members"] == []


async def test_a_record_whose_member_never_started_is_reported_and_dropped(
    tmp_path: Path,
) -> None:
    # As a scaler killed between the record and the spawn leaves it.
    rec = {
        "id": "web-9100-0123456789ab",
        "pid": None,
        "port": 9100,
        "address": "127.0.0.1:9100",
        "cmdline": ["/bin/false"],
        "start_ticks": -1,
        "started": time.time(),
        "log": str(tmp_path / "members" / "web-9100.log"),
        "run_id": "0123456789ab",
    }
    (tmp_path / "scaler-web.json").write_text(json.dumps({"pool": "web", "members": [rec]}))
    p = provider(tmp_path)
    await p.open()
    (m,) = await p.list()
    assert not m.running and "never started" in m.detail
    await p.stop_and_remove(m, grace=0)  # nothing to signal (and never pid 0: our own group)
    assert await p.list() == [] and members_doc(tmp_path)["members"] == []


async def test_a_process_started_with_this_members_file_but_on_no_record_is_stopped(
    tmp_path: Path, tag: str
) -> None:
    p = provider(tmp_path, LB_TEST_TAG=tag)
    await p.open()
    m = await p.create()
    pid = int(m.info["pid"])
    # Its record is lost (an operator emptied the file, or it was moved aside as unreadable).
    (tmp_path / "scaler-web.json").write_text(json.dumps({"pool": "web", "members": []}))
    # A process of another members file, with a run id too, is not ours: left alone.
    other = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "import time; time.sleep(30)",
        env={
            **os.environ,
            "LB_TEST_TAG": tag,
            RUN_ID_ENV: "feedfeedfeed",
            MEMBERS_FILE_ENV: str(tmp_path / "elsewhere.json"),
        },
        start_new_session=True,
    )
    try:
        again = provider(tmp_path, LB_TEST_TAG=tag)
        await again.open()
        wait_for(lambda: not alive(pid), 5, f"pid {pid} stopped")
        assert await again.list() == []
        assert other.returncode is None and alive(other.pid)
    finally:
        other.kill()
        await other.wait()

"""The dashboard shows where a scaler member runs (node, task, slot: the Swarm provider puts
them in the backend's metadata), in headless Chromium against a real lb; a backend without
them shows nothing more."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from lb.control.client import ControlClient
from tests.helpers import ProcessGroup, free_port
from tests.integration.test_dashboard import browser  # noqa: F401  (the fixture)

TASK = "0lxzqtufy1crdbmxuat2skl2i"


def test_the_dashboard_shows_node_task_and_slot(
    procs: ProcessGroup,
    browser: Any,  # noqa: F811
) -> None:
    b1, b2 = procs.backend("p1"), procs.backend("p2")
    admin = free_port()
    cfg: dict[str, Any] = {
        "lb": {"workers": 1, "grace": "1s"},
        "admin": {"bind": f"127.0.0.1:{admin}"},
        "listeners": [
            {"name": "web", "bind": f"127.0.0.1:{free_port()}", "mode": "http", "pool": "web"}
        ],
        "pools": {"web": {"backends": []}},
    }
    lb = procs.lb(cfg)
    sock = Path(lb.extra["config_path"]).parent / "run" / "lb.sock"

    async def register() -> None:
        async with ControlClient(sock) as c:
            meta = {"managed-by": "scaler", "node": "vm", "task": TASK, "slot": "1"}
            await c.add_backend("web", f"127.0.0.1:{b1.port}", 1, metadata=meta)
            await c.add_backend("web", f"127.0.0.1:{b2.port}", 1)

    asyncio.run(register())
    browser.get(f"http://127.0.0.1:{admin}/?interval=0.5")
    deadline = time.monotonic() + 20
    rows: list[tuple[str, str, str]] = []
    while time.monotonic() < deadline:
        rows = browser.execute_script(
            "return [...document.querySelectorAll('tr[data-backend]')].map((tr) => {"
            " const p = tr.querySelector('.placement');"
            " return [tr.dataset.backend, p ? p.textContent : '', p ? p.title : '']; })"
        )
        if len(rows) == 2:
            break
        time.sleep(0.1)
    got = {backend: (text, title) for backend, text, title in rows}
    assert got == {
        f"127.0.0.1:{b1.port}": (f"node vm · task {TASK[:12]} · slot 1", f"task {TASK}"),
        f"127.0.0.1:{b2.port}": ("", ""),
    }

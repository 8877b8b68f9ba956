#!/opt/lb/bin/python
"""``lb-healthcheck``: the image's HEALTHCHECK, for whichever program the container runs.

* ``lb run`` (PID 1): healthy when the control API answers, as many workers are live as
  ``[lb] workers`` asks for, and every listener accepts a TCP connection (a wildcard bind is
  tried on loopback). The connect is closed before any byte: lb counts an accepted connection.
* ``lb-scaler`` (``lb-scaler-container``): healthy while a scaler holds its lock (its status
  file names a live pid).
* anything else, such as a demo backend that lb-scaler started from this image: healthy (lb's
  own health checks judge backends).

Exit 0 healthy, 1 unhealthy, with one line that says why (``docker inspect`` shows it).
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from pathlib import Path

CONFIG = os.environ.get("LB_CONFIG", "/etc/lb/config.toml")


# What may stand before the program: the image's init and docker's, their options, shells.
WRAPPERS = frozenset({"tini", "docker-init", "sh", "dash", "bash"})


def pid1() -> list[str]:
    """The program the container runs (PID 1's command line, as base names) without the init,
    the interpreter (python, sh) and their options."""
    try:
        raw = Path("/proc/1/cmdline").read_bytes()
    except OSError:
        return []
    names = [Path(a).name for a in raw.decode().split("\0") if a]
    while names and (
        names[0] in WRAPPERS or names[0].startswith("-") or names[0].startswith("python")
    ):
        names = names[1:]
    return names


def connect_host(bind: str) -> tuple[str, int]:
    host, _, port = bind.rpartition(":")
    host = host.strip("[]")
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return host, int(port)


async def check_lb() -> str | None:
    from lb.config import load_config
    from lb.control.client import ControlClient, ControlClientError
    from lb.control.service import resolve_path

    config = load_config(CONFIG)
    client = ControlClient(resolve_path(CONFIG, config.lb.control_socket), timeout=3.0)
    try:
        info = await client.info()
    except ControlClientError as exc:
        return f"control API: {exc}"
    finally:
        await client.close()
    want = max(config.lb.worker_count, 1)
    if info.workers_live < want:
        return f"{info.workers_live} worker(s) live of {want}"
    for lc in config.listeners:
        try:
            with socket.create_connection(connect_host(lc.bind), timeout=3.0):
                pass
        except OSError as exc:
            return f"listener {lc.name} ({lc.bind}): {exc}"
    return None


def check_scaler() -> str | None:
    from lb.config import load_config
    from scaler import status
    from scaler.config import run_dir

    rd = run_dir(load_config(CONFIG), CONFIG)
    return None if status.holder(rd) is not None else f"no lb-scaler holds {rd}"


def main() -> int:
    argv = pid1()
    if argv[:1] in (["lb-scaler-container"], ["lb-scaler"]):
        why = check_scaler()
    elif argv[:2] == ["lb", "run"]:
        why = asyncio.run(check_lb())
    else:
        print(f"nothing to check for {' '.join(argv)[:60]!r}")
        return 0
    print(f"unhealthy: {why}" if why else "healthy")
    return 1 if why else 0


if __name__ == "__main__":
    sys.exit(main())

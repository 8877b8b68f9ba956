"""Cold start: from the first request at zero members to its first response byte.

``python -m benchmarks.coldstart [--rounds 10] [--providers process,docker,swarm]`` starts lb (1
worker) and lb-scaler on 127.0.0.1 with a pool scaled from ``min = 0`` (``scale_to_zero_after =
"1s"``), then, ``--rounds`` times: waits until the pool has no backend, sends one ``GET /`` on a
new connection, and times its first response byte. lb holds the request; the scaler, woken by
lb's demand API, starts a member; lb registers it ``checking``, its first health check passes,
and the held request goes out.

Where the time goes comes from the JSON logs of both processes (wall-clock ``time`` fields):

| part | from | to |
| --- | --- | --- |
| decision | the request is sent | the scaler's ``scale from zero`` decision |
| start | the decision | lb's ``backend_added`` (the member listens; the scaler registered it) |
| health | registered | lb's ``health_state`` event to ``up`` for that backend |
| release | up | the first response byte at the client |

The Docker provider runs only when an engine is reachable (``DOCKER_HOST``,
``scripts/dockerd.sh``) and busybox is installed; it uses the tests' image
(``tests/docker/conftest.py``). The Swarm provider (a single-replica service per member, host
network) also needs that engine to be a Swarm manager (``scripts/dockerd.sh`` runs ``docker
swarm init``); its members are services labelled ``bench=coldstart``. Every process is
stopped at the end; members are stopped by ``lb-scaler stop-all``. Bounded: each request waits
at most 20 s, each provider at most ``rounds * 30`` s. Figures are printed as a Markdown table
(and JSON with ``--json``); they are not asserted anywhere.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from benchmarks.procs import ROOT, Procs, free_port, tail, wait_log
from lb.control.client import ControlClient
from tests.helpers import to_toml  # the tests' config writer; the Docker image is theirs too

PARTS = ("decision", "start", "health", "release")
REQUEST_TIMEOUT = 20.0


@dataclass
class Round:
    total: float  # request sent -> first response byte
    decision: float | None
    start: float | None
    health: float | None
    release: float | None
    status: int


def config(tmp: Path, provider: str, ports: str) -> dict[str, Any]:
    scaler: dict[str, Any] = {
        "pool": "web",
        "provider": provider,
        "min": 0,
        "max": 1,
        "target": 10,
        "interval": "2s",
        "scale_to_zero_after": "1s",
        "scale_down_stabilization": "0s",
        "drain_timeout": "2s",
        "stop_timeout": "2s",
    }
    if provider == "process":
        scaler["process"] = {
            "command": "{python} -m lb.demo_server --port {port} --name web-{port}",
            "port_range": ports,
        }
    elif provider == "swarm":
        from tests.docker.conftest import IMAGE

        scaler["swarm"] = {
            "image": IMAGE,
            "command": "busybox httpd -f -p 127.0.0.1:{port} -h /www",
            "port_range": ports,
            "labels": {"bench": "coldstart"},
        }
    else:
        from tests.docker.conftest import IMAGE

        scaler["docker"] = {
            "image": IMAGE,
            "command": "busybox httpd -f -p 127.0.0.1:{port} -h /www",
            "network_mode": "host",
            "port_range": ports,
            "labels": {"bench": "coldstart"},
        }
    return {
        "lb": {
            "workers": 1,
            "log_format": "json",
            "state_file": str(tmp / "run" / "state.json"),
            "control_socket": str(tmp / "run" / "lb.sock"),
        },
        "listeners": [
            {"name": "web", "bind": f"127.0.0.1:{free_port()}", "mode": "http", "pool": "web"}
        ],
        "pools": {
            "web": {
                "hold_timeout": "20s",
                "health": {
                    "type": "http",
                    "path": "/healthz",
                    "interval": "1s",
                    "fast_interval": "50ms",
                    "timeout": "500ms",
                },
            }
        },
        "scalers": [scaler],
    }


def events(path: Path) -> list[dict[str, Any]]:
    out = []
    with contextlib.suppress(OSError):
        for line in path.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                with contextlib.suppress(ValueError):
                    out.append(json.loads(line))
    return out


def first_byte(port: int) -> tuple[float, int]:
    """One GET / on a new connection: (seconds to the first response byte, status)."""
    with socket.create_connection(("127.0.0.1", port), timeout=REQUEST_TIMEOUT) as s:
        t0 = time.time()
        s.sendall(b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
        data = s.recv(65536)
        t1 = time.time()
        while chunk := s.recv(65536):
            data += chunk
    if not data:
        return t1 - t0, 0
    return t1 - t0, int(data.split(b" ", 2)[1])


async def backends(sock: Path) -> int:
    async with ControlClient(sock, timeout=5) as c:
        return len((await c.backends("web")).backends)


def wait_for_zero(sock: Path, limit: float) -> None:
    deadline = time.monotonic() + limit
    while asyncio.run(backends(sock)):
        if time.monotonic() > deadline:
            raise RuntimeError(f"the pool did not go back to 0 members within {limit:g}s")
        time.sleep(0.1)


def split(t_send: float, t_first: float, lb_log: Path, sc_log: Path) -> dict[str, float | None]:
    """The parts of one cold start, from the logs (None: the event was not found)."""
    decided = next(
        (
            e["time"]
            for e in events(sc_log)
            if e.get("event") == "scaler_decision"
            and e["time"] >= t_send - 0.05
            and "scale from zero" in e.get("msg", "")
        ),
        None,
    )
    lb_events = [e for e in events(lb_log) if e["time"] >= t_send - 0.05]
    added = next((e for e in lb_events if e.get("event") == "backend_added"), None)
    up = (
        next(
            (
                e["time"]
                for e in lb_events
                if e.get("event") == "health_state"
                and e.get("to") == "up"
                and e.get("backend") == added.get("backend")
            ),
            None,
        )
        if added is not None
        else None
    )
    registered = added["time"] if added is not None else None

    def part(a: float | None, b: float | None) -> float | None:
        return None if a is None or b is None else round(b - a, 3)

    return {
        "decision": part(t_send, decided),
        "start": part(decided, registered),
        "health": part(registered, up),
        "release": part(up, t_first),
    }


def run_provider(provider: str, rounds: int) -> list[Round]:
    procs = Procs()
    tmp = Path(tempfile.mkdtemp(prefix=f"coldstart-{provider}-"))
    (tmp / "run").mkdir()
    lo = 20000 + (os.getpid() * 7) % 10000
    cfg = config(tmp, provider, f"{lo}-{lo + 9}")
    path = tmp / "lb.toml"
    path.write_text(to_toml(cfg))
    lb_log, sc_log = tmp / "lb.log", tmp / "scaler.log"
    sock = tmp / "run" / "lb.sock"
    port = int(cfg["listeners"][0]["bind"].rsplit(":", 1)[1])
    out: list[Round] = []
    try:
        lb = procs.start([sys.executable, "-m", "lb", "run", "-c", str(path)], lb_log)
        wait_log(lb_log, "lb: running", lb)
        sc = procs.start([sys.executable, "-m", "scaler", "-c", str(path)], sc_log)
        wait_log(sc_log, "hold at 0", sc)
        deadline = time.monotonic() + rounds * 30
        for i in range(rounds):
            if time.monotonic() > deadline:
                print(f"{provider}: out of time after {i} rounds", file=sys.stderr)
                break
            wait_for_zero(sock, 30)
            time.sleep(0.2)  # the members file and lb's state settle after the removal
            t_send = time.time()
            total, status = first_byte(port)
            parts = split(t_send, t_send + total, lb_log, sc_log)
            out.append(Round(total=round(total, 3), status=status, **parts))
            print(f"{provider} #{i + 1}: {total:.3f}s {status} {parts}", file=sys.stderr)
    except Exception:
        print(f"lb log:\n{tail(lb_log)}\nscaler log:\n{tail(sc_log)}", file=sys.stderr)
        raise
    finally:
        # The scaler first (it would start members), then its members, then lb.
        for p in procs.procs[1:]:
            p.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(15)
        subprocess.run(
            [sys.executable, "-m", "scaler", "-c", str(path), "stop-all"],
            cwd=ROOT,
            capture_output=True,
            timeout=60,
            check=False,
        )
        procs.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def docker_ready() -> str | None:
    """None when the Docker provider can run, else why not."""
    if not (shutil.which("busybox") or os.path.exists("/bin/busybox")):
        return "busybox is not installed"
    if not os.environ.get("DOCKER_HOST") and not os.path.exists("/var/run/docker.sock"):
        return "no Docker engine (DOCKER_HOST is not set; scripts/dockerd.sh start)"
    from tests.docker.conftest import _build_image, _engine_version

    try:
        asyncio.run(_engine_version())
        asyncio.run(_build_image())
    except Exception as exc:
        return f"no Docker engine reachable ({exc})"
    return None


def swarm_ready() -> str | None:
    """None when the Swarm provider can run, else why not."""
    why = docker_ready()
    if why is not None:
        return why
    from tests.docker.conftest import _swarm_state

    state, manager = asyncio.run(_swarm_state())
    if state != "active" or not manager:
        return f"the Docker engine is not a Swarm manager (swarm state {state})"
    return None


def summary(provider: str, rows: list[Round]) -> dict[str, Any]:
    def med(values: list[float | None]) -> float | None:
        got = [v for v in values if v is not None]
        return round(statistics.median(got), 3) if got else None

    totals = [r.total for r in rows]
    return {
        "provider": provider,
        "rounds": len(rows),
        "ok": sum(1 for r in rows if r.status == 200),
        "median": round(statistics.median(totals), 3) if totals else None,
        "max": max(totals) if totals else None,
        **{f"{p}_median": med([getattr(r, p) for r in rows]) for p in PARTS},
        "rows": [asdict(r) for r in rows],
    }


def table(results: list[dict[str, Any]]) -> str:
    def f(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.3f}"

    lines = [
        "| provider | rounds (200) | median s | max s | decision | start | health | release |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    lines += [
        f"| {r['provider']} | {r['rounds']} ({r['ok']}) | {f(r['median'])} | {f(r['max'])} | "
        + " | ".join(f(r[f"{p}_median"]) for p in PARTS)
        + " |"
        for r in results
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.coldstart", description=__doc__)
    ap.add_argument("--rounds", type=int, default=10, help="cold starts per provider (1-50)")
    ap.add_argument(
        "--providers", default="process,docker,swarm", help="any of process, docker, swarm"
    )
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args(argv)
    rounds = max(1, min(50, args.rounds))
    results = []
    for provider in [p.strip() for p in args.providers.split(",") if p.strip()]:
        if provider in ("docker", "swarm"):
            why = docker_ready() if provider == "docker" else swarm_ready()
            if why is not None:
                print(f"{provider}: skipped: {why}", file=sys.stderr)
                continue
        elif provider != "process":
            ap.error(f"unknown provider {provider!r}: process, docker or swarm")
        results.append(summary(provider, run_provider(provider, rounds)))
    print(table(results))
    print("(parts are medians, in seconds; see the module docstring for what each covers)")
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

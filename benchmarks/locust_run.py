"""Run the locust scenario against lb: 3 demo backends, lb with a sticky cookie, locust headless.

    python -m benchmarks.locust_run                        # 50 users, 30 s
    python -m benchmarks.locust_run --users 200 --time 60s --workers 2

Prints locust's summary (requests, failures, latency percentiles per endpoint) and exits with
locust's status: 1 when any request failed (a sticky session broken, an echo that differs, a
5xx). Everything runs on 127.0.0.1 and is stopped at the end. Needs the ``bench`` extra
(``pip install -e '.[bench]'``) for locust.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks import proxies
from benchmarks.procs import ROOT, Procs, free_ports, wait_port

LOCUSTFILE = ROOT / "benchmarks" / "locustfile.py"
STICKY_COOKIE = "lb_sticky"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="benchmarks.locust_run", description=__doc__.split("\n")[0])
    ap.add_argument("--users", type=int, default=50)
    ap.add_argument("--spawn-rate", type=float, default=25.0)
    ap.add_argument("--time", default="30s", help="locust --run-time (e.g. 30s, 2m)")
    ap.add_argument("--workers", type=int, default=1, help="lb workers")
    ap.add_argument("--backends", type=int, default=3)
    ap.add_argument("--strategy", default="round_robin", help="the pool's strategy")
    ap.add_argument("--latency-ms", type=float, default=2.0, help="demo backend delay/request")
    ap.add_argument("--csv", type=Path, help="also write locust's CSV files with this prefix")
    ap.add_argument("--lb-src", type=Path, help="run the lb package from this directory")
    args = ap.parse_args(argv)
    try:
        import locust  # noqa: F401
    except ImportError:
        print("benchmarks: locust is not installed (pip install -e '.[bench]')", file=sys.stderr)
        return 2

    procs = Procs()
    with tempfile.TemporaryDirectory(prefix="lb-locust-") as tmpdir:
        tmp = Path(tmpdir)
        try:
            ports = free_ports(args.backends)
            for i, port in enumerate(ports):
                procs.start(
                    [
                        sys.executable,
                        "-m",
                        "lb.demo_server",
                        "--port",
                        str(port),
                        "--name",
                        f"backend-{i + 1}",
                        "--latency",
                        str(args.latency_ms),
                    ],
                    tmp / f"backend-{i + 1}.log",
                )
            for port in ports:
                wait_port(port)
            lb = proxies.start(
                procs,
                tmp,
                "lb",
                name="locust",
                mode="http",
                backends=ports,
                strategy=args.strategy,
                workers=args.workers,
                sticky_cookie=STICKY_COOKIE,
                lb_src=args.lb_src,
            )
            host = f"http://127.0.0.1:{lb.port}"
            cmd = [
                locust_command(),
                "-f",
                str(LOCUSTFILE),
                "--headless",
                "--host",
                host,
                "--users",
                str(args.users),
                "--spawn-rate",
                str(args.spawn_rate),
                "--run-time",
                args.time,
                "--only-summary",
                "--stop-timeout",
                "5",
            ]
            if args.csv:
                cmd += ["--csv", str(args.csv)]
            print(
                f"lb on {host} ({args.workers} worker(s), {args.strategy}, sticky cookie "
                f"{STICKY_COOKIE!r}) -> {args.backends} demo backends; running:\n  "
                + " ".join(cmd),
                flush=True,
            )
            env = {**os.environ, "LB_STICKY_COOKIE": STICKY_COOKIE}
            return subprocess.run(cmd, env=env, cwd=ROOT).returncode
        finally:
            procs.stop_all()


def locust_command() -> str:
    """The locust next to this interpreter (the venv's), else the one on PATH."""
    beside = Path(sys.executable).parent / "locust"
    return str(beside) if beside.exists() else shutil.which("locust") or "locust"


if __name__ == "__main__":
    sys.exit(main())

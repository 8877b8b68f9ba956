"""``lb-scaler``: the autoscaling sidecar of lb (also ``python -m scaler``).

lb-scaler -c config.toml [run]     scale every pool of [[scalers]] until SIGTERM/Ctrl-C
          [--metrics HOST:PORT]     serve Prometheus metrics on GET /metrics there
lb-scaler -c config.toml status    members, desired counts, recent decisions (--json)
lb-scaler -c config.toml check     validate the file (0 valid, 2 invalid)
lb-scaler -c config.toml stop-all  drain, stop and deregister every member (scaler stopped)

Exit codes: 0 done, 1 failed (the message says why), 2 invalid configuration.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import time
from typing import Any

import orjson
import uvloop

from lb.config import Config, ConfigError, load_config
from lb.control.service import resolve_path
from lb.logs import setup_logging
from scaler import status
from scaler.config import ScalerConfig, run_dir, scalers_of
from scaler.controller import PoolScaler
from scaler.fleet import FleetError, Instance, open_instances
from scaler.metrics import parse_bind
from scaler.providers import ProviderError, make_provider
from scaler.runner import Runner

log = logging.getLogger("scaler")


def _load(path: str) -> tuple[Config, list[ScalerConfig]]:
    config = load_config(path)
    return config, scalers_of(config)


async def _run(
    config: Config, path: str, scalers: list[ScalerConfig], metrics: str | None = None
) -> int:
    runner = Runner(config, path, scalers, metrics)
    try:
        await runner.open()
    except (status.AlreadyRunning, ProviderError, FleetError) as exc:
        log.error("cannot start: %s", exc)
        await runner.close()
        return 1
    except OSError as exc:
        log.error("cannot start: --metrics %s: %s", metrics, exc.strerror or exc)
        await runner.close()
        return 1
    print(runner.banner(), flush=True)
    try:
        return await runner.run()
    finally:
        await runner.close()


async def _stop_all(config: Config, path: str, scalers: list[ScalerConfig]) -> int:
    rd = run_dir(config, path)
    lock = status.Lock(rd)
    try:
        lock.acquire()
    except status.AlreadyRunning as exc:
        print(f"lb-scaler: {exc}", file=sys.stderr)
        return 1
    socket = resolve_path(path, config.lb.control_socket)
    instances: list[Instance] = []
    failed = 0
    pools: dict[str, Any] = {}
    try:
        for i, sc in enumerate(scalers):
            provider = make_provider(sc, path, rd)
            try:
                lbs = open_instances(sc, i, path, socket)
                instances += lbs
                await provider.open()
                ps = PoolScaler(sc, provider, lbs)
                removed = await ps.stop_all()
                pools[sc.pool] = ps.status()
                left = len(ps.removing)
                print(f"pool {sc.pool}: {removed} member(s) stopped and removed", flush=True)
                if left:
                    failed += 1
                    print(f"pool {sc.pool}: {left} member(s) could not be removed", file=sys.stderr)
            except (ProviderError, FleetError) as exc:
                failed += 1
                print(f"pool {sc.pool}: {exc}", file=sys.stderr)
            finally:
                await provider.close()
    finally:
        for inst in instances:
            await inst.client.close()
        now = time.time()
        doc = {"pid": os.getpid(), "running": False, "config": path}
        with contextlib.suppress(OSError):
            status.write(rd, {**doc, "started": now, "updated": now, "pools": pools})
        lock.release()
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "-c",
        "--config",
        default=argparse.SUPPRESS,
        help="path to config.toml (default: ./config.toml)",
    )
    parser = argparse.ArgumentParser(
        prog="lb-scaler", description="autoscaling sidecar of lb", parents=[common]
    )
    sub = parser.add_subparsers(dest="command")
    run = sub.add_parser(
        "run", parents=[common], help="scale the pools of [[scalers]] (the default)"
    )
    for p in (parser, run):
        p.add_argument(
            "--metrics",
            metavar="HOST:PORT",
            default=argparse.SUPPRESS,
            help="serve the scaler's Prometheus metrics on GET /metrics there (default: off)",
        )
    st = sub.add_parser("status", parents=[common], help="members, desired counts, decisions")
    st.add_argument("--json", action="store_true", help="the status file as JSON")
    sub.add_parser("check", parents=[common], help="validate the config file")
    sub.add_parser("stop-all", parents=[common], help="drain, stop and deregister every member")
    args = parser.parse_args(argv)
    path: str = getattr(args, "config", "config.toml")
    command = args.command or "run"
    metrics: str | None = getattr(args, "metrics", None)
    if metrics is not None:
        try:
            parse_bind(metrics)
        except ValueError as exc:
            parser.error(str(exc))

    try:
        config, scalers = _load(path)
    except ConfigError as exc:
        print(f"lb-scaler: {exc}", file=sys.stderr)
        return 2
    if command == "check":
        pools = ", ".join(sc.pool for sc in scalers) or "none"
        print(f"{path}: OK ({len(scalers)} scaler(s): {pools})")
        return 0
    if command == "status":
        rd = run_dir(config, path)
        doc = status.read(rd)
        pid = status.holder(rd)
        if args.json:
            print(
                orjson.dumps(
                    {"running_pid": pid, "status": doc}, option=orjson.OPT_INDENT_2
                ).decode()
            )
        else:
            print(status.format_status(doc, pid, path))
        return 0
    if not scalers:
        print(
            f"lb-scaler: {path} has no [[scalers]] entry; add one (see docs/scaler.md)",
            file=sys.stderr,
        )
        return 2
    setup_logging(config.lb.log_format, config.lb.log_level, "scaler")
    if command == "stop-all":
        return uvloop.run(_stop_all(config, path, scalers))
    return uvloop.run(_run(config, path, scalers, metrics))


if __name__ == "__main__":
    sys.exit(main())

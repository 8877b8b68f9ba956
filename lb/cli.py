"""``lb``: run the proxy, or check a config file.

lb run   -c config.toml     start the supervisor and its workers
lb check -c config.toml     validate the file and exit (0 valid, 2 invalid)
"""

from __future__ import annotations

import argparse
import logging
import sys

import uvloop

from lb.config import Config, ConfigError, load_config
from lb.control.service import resolve_path
from lb.logs import setup_logging
from lb.supervisor import StartupError, Supervisor

log = logging.getLogger("lb")


def banner(config: Config, path: str) -> str:
    n = config.lb.worker_count
    workers = "1 process (workers = 0)" if n == 0 else f"{n} worker process(es)"
    lines = [f"lb: running {path} with {workers}"]
    lines += [
        f"  listener {lc.name}: {lc.mode}://{lc.bind} -> pool {lc.pool}" for lc in config.listeners
    ]
    for name, pool in config.pools.items():
        members = ", ".join(f"{b.address} (w={b.weight})" for b in pool.backends) or "none yet"
        lines.append(f"  pool {name} [{pool.strategy}]: {members}")
    sock = resolve_path(path, config.lb.control_socket)
    lines.append(f"  control socket: {sock} (lbctl -c {path})")
    if config.admin.bind is not None:
        lines.append(f"  admin listener: http://{config.admin.bind}/v1/")
    return "\n".join(lines)


async def _run(config: Config, path: str, log_format: str, log_level: str) -> int:
    sup = Supervisor(config, path, log_format, log_level)
    try:
        await sup.start()
    except StartupError as exc:
        log.error("startup failed: %s", exc)
        await sup.stop()
        return 1
    print(banner(config, path), flush=True)
    await sup.run()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lb", description="asyncio L4/L7 load balancer")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (("run", "run the load balancer"), ("check", "validate a config file")):
        sp = sub.add_parser(name, help=text)
        sp.add_argument("-c", "--config", default="config.toml", help="path to config.toml")
    args = parser.parse_args(argv)

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"lb: {exc}", file=sys.stderr)
        return 2
    if args.command == "check":
        print(
            f"{args.config}: OK ({len(config.listeners)} listener(s), {len(config.pools)} pool(s))"
        )
        return 0
    setup_logging(config.lb.log_format, config.lb.log_level, "lb")
    return uvloop.run(_run(config, args.config, config.lb.log_format, config.lb.log_level))


if __name__ == "__main__":
    sys.exit(main())

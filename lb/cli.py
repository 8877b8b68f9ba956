"""``lb``: run the proxy, or check a config file.

lb run   -c config.toml     start the supervisor and its workers
lb check -c config.toml     validate the file and exit (0 valid, 2 invalid)
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

import uvloop

from lb import __version__
from lb.config import Config, ConfigError, load_config
from lb.control.server import TokenFileError, read_token
from lb.control.service import resolve_path
from lb.logs import setup_logging
from lb.model import AdminState
from lb.state import ClusterState
from lb.supervisor import StartupError, Supervisor

log = logging.getLogger("lb")


def banner(config: Config, path: str, state: ClusterState | None = None) -> str:
    """What a new user needs to know: where lb listens, what it sends where, and where to look
    (dashboard, /metrics, control socket). ``state``: the running pools, runtime backends and
    health included; without it, the config's backends."""
    n = config.lb.worker_count
    workers = "1 process (workers = 0)" if n == 0 else f"{n} worker process(es)"
    lines = [f"lb: running {path} with {workers}"]
    for lc in config.listeners:
        to = f"pool {lc.pool}" if lc.pool is not None else "routes only"
        routed = sorted({r.pool for r in lc.routes} - {lc.pool})
        extra = f" (routes also to {', '.join(routed)})" if routed else ""
        scheme = {"http": "https", "tcp": "tls"}[lc.mode] if lc.tls is not None else lc.mode
        if lc.proxy_protocol:
            extra += " (PROXY protocol)"
        elif lc.redirect_https:
            extra = " (redirects to https)"
        lines.append(f"  listener {lc.name}: {scheme}://{lc.bind} -> {to}{extra}")
    for name, pool in config.pools.items():
        if state is not None and name in state.pools:
            members = [
                f"{b.address} (w={b.weight}, {b.health}"
                + (f", {b.admin}" if b.admin is not AdminState.READY else "")
                + ")"
                for b in state.pools[name].values()
            ]
        else:
            members = [f"{b.address} (w={b.weight})" for b in pool.backends]
        lines.append(f"  pool {name} [{pool.strategy}]: {', '.join(members) or 'none yet'}")
    sock = resolve_path(path, config.lb.control_socket)
    lines.append(f"  control socket: {sock} (lbctl -c {path})")
    if config.admin.bind is not None:
        base = f"http://{_browsable(config.admin.bind)}"
        lines.append(f"  dashboard: {base}/")
        lines.append(f"  metrics: {base}/metrics   API: {base}/v1/ (read-only without a token)")
    else:
        lines.append('  dashboard and /metrics: off (set [admin] bind = "127.0.0.1:9900")')
    return "\n".join(lines)


def _browsable(bind: str) -> str:
    """The admin address as a URL host: a wildcard bind is reached on loopback."""
    host, _, port = bind.rpartition(":")
    if host in ("0.0.0.0", ""):
        return f"127.0.0.1:{port}"
    if host in ("[::]", "::"):
        return f"[::1]:{port}"
    return bind


async def _run(config: Config, path: str, log_format: str, log_level: str) -> int:
    sup = Supervisor(config, path, log_format, log_level)
    try:
        await sup.start()
    except StartupError as exc:
        log.error("startup failed: %s", exc)
        await sup.stop()
        return 1
    print(banner(config, path, sup.state), flush=True)
    await sup.run()
    return 0


def file_problems(config: Config, config_path: str) -> list[str]:
    """What ``lb run`` would find wrong with the files the config names (``lb check`` and
    ``lb run`` both look, before anything starts): the admin token file, and whether the
    state file can be written (a runtime change answered 2xx must survive a restart)."""
    problems = []
    try:
        read_token(Path(config_path), config.admin)
    except TokenFileError as exc:
        problems.append(f"{exc}; fix the file or remove the field")
    state = resolve_path(config_path, config.lb.state_file)
    folder = state.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent  # lb makes the missing folders: the nearest one that exists
    if state.is_dir():
        problems.append(f"lb.state_file: {state} is a folder; name a file")
    elif not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        problems.append(f"lb.state_file: cannot write in {folder}; fix its permissions or move it")
    elif state.exists() and not os.access(state, os.W_OK):
        problems.append(f"lb.state_file: {state} is not writable; fix its permissions")
    return problems


RUN_HELP = (
    "Starts the supervisor and its workers on the config (default ./config.toml) and runs in "
    "the foreground. Signals: SIGHUP reloads the config (a bad one is refused and the running "
    "one kept), SIGTERM or SIGINT drain (lb.grace) and stop. Runtime changes go through the "
    "control socket (lbctl) and are kept in lb.state_file across restarts."
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lb", description="asyncio L4/L7 load balancer")
    parser.add_argument("--version", action="version", version=f"lb {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text, more in (
        ("run", "run the load balancer", RUN_HELP),
        ("check", "validate a config file and the files it names; exit 0 if OK", None),
    ):
        sp = sub.add_parser(name, help=text, description=more or text)
        sp.add_argument(
            "-c",
            "--config",
            default="config.toml",
            help="path to config.toml (default: %(default)s)",
        )
    args = parser.parse_args(argv)

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"lb: {exc}", file=sys.stderr)
        return 2
    problems = file_problems(config, args.config)
    if problems:
        print(f"lb: {args.config}: " + "\n  ".join(["cannot run:", *problems]), file=sys.stderr)
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

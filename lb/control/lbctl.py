"""``lbctl``: the operator's client of the control API (tables for people, ``--json`` for scripts).

    lbctl [-c config.toml] [--socket PATH] [--json] COMMAND ...

The socket is ``--socket``, else ``[lb] control_socket`` of the config (``-c``, default
``config.toml``), relative to the config file's folder. Only that one field is read, so
lbctl works while the rest of the file is being edited: a file that is not even valid TOML
is scanned line by line for it (else the default ``run/lb.sock``), so that ``lbctl reload``
still reaches lb and shows lb's own 422 about the file.

Exit codes: 0 done; 1 the API refused the call (or ``wait`` timed out); 2 bad usage; 3 lb
cannot be reached.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import time
import tomllib
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import orjson
from pydantic import BaseModel

from lb.control.client import ApiError, ControlClient, ControlClientError, Unreachable
from lb.control.models import BackendView, Info, Percentiles

EXIT_OK, EXIT_REFUSED, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3


class UsageError(Exception):
    pass


DEFAULT_SOCKET = "run/lb.sock"  # [lb] control_socket when the file does not set it


def socket_from_config(config: str, note: Callable[[str], None] = lambda _: None) -> Path:
    """``[lb] control_socket`` of ``config``, relative to its folder. A file that is not valid
    TOML (an edit under way, or the very edit ``lbctl reload`` is about to have lb refuse) is
    scanned line by line for that one key, else the default applies: either way lbctl still
    reaches lb, whose own answer then names the problem. ``note`` says that it did so."""
    path = Path(config)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise UsageError(
            f"no config file {config} to take the control socket from; "
            "pass -c CONFIG or --socket PATH"
        ) from None
    except OSError as exc:
        raise UsageError(f"cannot read {config}: {exc.strerror}; pass --socket PATH") from None
    value: object
    try:
        data = tomllib.loads(raw.decode())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        found = scan_control_socket(raw.decode(errors="replace"))
        value = found or DEFAULT_SOCKET
        where = "its [lb] control_socket line" if found else "the default (no such line found)"
        note(f"{config} is not valid TOML ({exc}); control socket {value} from {where}")
    else:
        section = data.get("lb", {})
        value = section.get("control_socket", DEFAULT_SOCKET) if isinstance(section, dict) else None
    if not isinstance(value, str) or not value:
        raise UsageError(f"{config}: lb.control_socket is not a path; pass --socket PATH")
    p = Path(value)
    return p if p.is_absolute() else path.resolve().parent / p


_TABLE = re.compile(r"^\s*\[\s*([^\[\]]*?)\s*\](?:\s*#.*)?\s*$")
_KEY = re.compile(r"^\s*(lb\s*\.\s*)?control_socket\s*=(.*)$")


def scan_control_socket(text: str) -> str | None:
    """The value of ``control_socket`` in the ``[lb]`` table (or ``lb.control_socket`` at the
    top level) of a file that does not parse as a whole, read line by line; None if no such
    line parses. Lines inside multi-line strings are skipped."""
    table = ""
    in_string: str | None = None  # the delimiter of the multi-line string we are in
    for line in text.splitlines():
        if in_string is not None:
            if line.count(in_string) % 2 == 1:
                in_string = None
            continue
        for quote in ('"""', "'''"):
            if line.count(quote) % 2 == 1:
                in_string = quote
        if in_string is not None:
            continue
        if line.lstrip().startswith("[["):
            table = "[["  # an array of tables: not [lb]
            continue
        m = _TABLE.match(line)
        if m is not None:
            table = re.sub(r"\s*\.\s*", ".", m.group(1)).replace('"', "")
            continue
        m = _KEY.match(line)
        if m is None or (table != "lb" if m.group(1) is None else table != ""):
            continue
        try:
            value = tomllib.loads(f"v = {m.group(2).strip()}")["v"]
        except tomllib.TOMLDecodeError:
            return None  # the broken line is this one
        return value if isinstance(value, str) and value else None
    return None


# -- output -------------------------------------------------------------------------------------


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(h) for h in headers], *[[_cell(v) for v in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    return "\n".join(lines)


def _cell(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def _name(b: BackendView) -> str:
    return b.id if b.id == b.address else f"{b.id} ({b.address})"


def backends_table(backends: Sequence[BackendView]) -> str:
    rows = [
        (
            b.pool,
            b.id,
            b.address,
            b.weight,
            b.max_conn or None,
            b.admin.value,
            b.health.value + (" ejected" if b.ejected else ""),
            b.active,
            b.total,
            b.connect_failures + b.errors,
            b.last_check or None,
        )
        for b in backends
    ]
    headers = ("POOL", "BACKEND", "ADDRESS", "WEIGHT", "MAX CONN", "ADMIN", "HEALTH", "ACTIVE",
               "TOTAL", "ERRORS", "LAST CHECK")  # fmt: skip
    return table(headers, rows) if rows else "(no backends)"


def _ms(p: Percentiles | None) -> tuple[Any, Any, Any]:
    return (None, None, None) if p is None else (p.p50, p.p95, p.p99)


def _print_json(doc: Any) -> None:
    if isinstance(doc, BaseModel):
        doc = doc.model_dump(mode="json")
    sys.stdout.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode() + "\n")


# -- commands -----------------------------------------------------------------------------------


Command = Callable[[argparse.Namespace, ControlClient], Awaitable[int]]


def _out(args: argparse.Namespace, model: BaseModel, text: str) -> None:
    if args.json:
        _print_json(model)
    else:
        print(text)


async def cmd_backends(args: argparse.Namespace, client: ControlClient) -> int:
    doc: BaseModel
    if args.pool:
        res = await client.backends(args.pool)
        backends, doc = res.backends, res
    else:
        pools = await client.pools()
        backends, doc = [b for p in pools.pools for b in p.backends], pools
    _out(args, doc, backends_table(backends))
    return EXIT_OK


async def cmd_pools(args: argparse.Namespace, client: ControlClient) -> int:
    pools = await client.pools()
    rows = [
        (
            p.name,
            p.strategy,
            ",".join(p.listeners) or None,
            len(p.backends),
            sum(1 for b in p.backends if b.admin == "ready" and b.health == "up"),
            "yes" if p.health_checks else "no",
            p.drain_timeout,
        )
        for p in pools.pools
    ]
    headers = ("POOL", "STRATEGY", "LISTENERS", "BACKENDS", "READY+UP", "CHECKS",
               "DRAIN TIMEOUT")  # fmt: skip
    _out(args, pools, table(headers, rows))
    return EXIT_OK


async def cmd_add(args: argparse.Namespace, client: ControlClient) -> int:
    meta = dict(_kv(x) for x in args.meta or ())
    added = await client.add_backend(
        args.pool, args.address, args.weight, id=args.id, metadata=meta, max_conn=args.max_conn
    )
    b = added.backend
    verb = "added" if added.created else "already registered (unchanged):"
    _out(args, added, f"{verb} {b.pool}/{_name(b)} weight {b.weight}, {b.admin}, {b.health}")
    return EXIT_OK


async def cmd_admin(args: argparse.Namespace, client: ControlClient) -> int:
    b = await client.set_admin(args.pool, args.backend, args.command)
    _out(args, b, f"{b.pool}/{_name(b)}: admin {b.admin}")
    return EXIT_OK


async def cmd_weight(args: argparse.Namespace, client: ControlClient) -> int:
    b = await client.set_weight(args.pool, args.backend, args.weight)
    _out(args, b, f"{b.pool}/{_name(b)}: weight {b.weight}")
    return EXIT_OK


async def cmd_max_conn(args: argparse.Namespace, client: ControlClient) -> int:
    b = await client.update_backend(args.pool, args.backend, max_conn=args.max_conn)
    _out(args, b, f"{b.pool}/{_name(b)}: max_conn {b.max_conn or 'none (0)'}")
    return EXIT_OK


async def cmd_remove(args: argparse.Namespace, client: ControlClient) -> int:
    removed = await client.remove(args.pool, args.backend, force=args.force)
    extra = " (its connections were closed)" if removed.forced else ""
    _out(args, removed, f"removed {removed.removed.pool}/{_name(removed.removed)}{extra}")
    return EXIT_OK


async def cmd_wait(args: argparse.Namespace, client: ControlClient) -> int:
    w = await client.wait_removable(args.pool, args.backend, args.timeout)
    if w.removable:
        text = f"{w.pool}/{w.id}: removable (waited {w.waited:g}s)"
    else:
        text = f"{w.pool}/{w.id}: not removable after {w.waited:g}s: {w.reason}"
    _out(args, w, text)
    return EXIT_OK if w.removable else EXIT_REFUSED


async def cmd_stats(args: argparse.Namespace, client: ControlClient) -> int:
    st = await client.stats(args.pool, window=args.window)
    rows: list[tuple[Any, ...]] = []
    for pname, p in st.pools.items():
        eligible = f"{p.backends_eligible}/{p.backends_total} eligible"
        rate = f"{p.error_rate:.2%}"
        waiting: Any = f"{p.queued}+{p.held}" if p.queued or p.held else 0
        if p.queue_ms is not None:  # someone waited during the window
            waiting = f"{waiting} (p95 wait {p.queue_ms.p95:g} ms)"
        rows.append((pname, "*", eligible, p.in_flight, waiting, p.rate, rate, *_ms(p.latency_ms)))
        for bid, b in p.backends.items():
            state = f"{b.admin}/{b.health}"
            rate = f"{b.error_rate:.2%}"
            rows.append((pname, bid, state, b.in_flight, None, b.rate, rate, *_ms(b.latency_ms)))
    headers = ("POOL", "BACKEND", "STATE", "IN-FLIGHT", "QUEUED+HELD", "RATE/S", "ERRORS",
               "P50 MS", "P95 MS", "P99 MS")  # fmt: skip
    text = f"over the last {st.measured:g}s (asked {st.window:g}s)\n" + table(headers, rows)
    _out(args, st, text)
    return EXIT_OK


async def cmd_reload(args: argparse.Namespace, client: ControlClient) -> int:
    r = await client.reload()
    lines = [f"reloaded: {len(r.changes)} change(s)"]
    lines += [f"  {line}" for line in r.changes]
    lines += [f"  {name} changed: applies at the next restart" for name in r.restart_required]
    _out(args, r, "\n".join(lines))
    return EXIT_OK


def info_text(info: Info) -> str:
    lines = []
    for k, v in info.model_dump().items():
        if k in ("state_file_discarded", "workers_live", "worker_restarts"):
            continue
        if k == "workers":
            missing = "" if info.workers_live >= max(1, v) else "  (MISSING WORKERS)"
            v = f"{v} configured, {info.workers_live} live, {info.worker_restarts} restart(s)"
            v += missing
        lines.append(f"{k}: {_cell(v)}")
    gone = info.state_file_discarded
    if gone is None:
        lines.append("state_file_discarded: -")
    else:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(gone.at))
        lines.append(
            f"state_file_discarded: moved to {gone.moved_to} at {when}; lb started from the "
            "config alone, without the runtime changes it held"
        )
        lines += [f"  {line}" for line in gone.error.splitlines()]
    return "\n".join(lines)


async def cmd_info(args: argparse.Namespace, client: ControlClient) -> int:
    info = await client.info()
    _out(args, info, info_text(info))
    return EXIT_OK


COMMANDS: dict[str, Command] = {
    "backends": cmd_backends,
    "pools": cmd_pools,
    "add": cmd_add,
    "drain": cmd_admin,
    "ready": cmd_admin,
    "maint": cmd_admin,
    "weight": cmd_weight,
    "max-conn": cmd_max_conn,
    "remove": cmd_remove,
    "wait": cmd_wait,
    "stats": cmd_stats,
    "reload": cmd_reload,
    "info": cmd_info,
}


def _kv(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise UsageError(f"--meta wants KEY=VALUE, not {text!r}")
    return key, value


def _weight(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None


def parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    # SUPPRESS lets the options sit before or after the command without resetting each other.
    common.add_argument("-c", "--config", default=argparse.SUPPRESS, help="config.toml of lb")
    common.add_argument("--socket", default=argparse.SUPPRESS, help="control socket path")
    common.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="JSON output"
    )
    p = argparse.ArgumentParser(
        prog="lbctl",
        parents=[common],
        description="Control a running lb through its control socket.",
        epilog="exit codes: 0 done, 1 refused by lb (or wait timed out), 2 usage, 3 lb unreachable",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def cmd(name: str, text: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=text, description=text, parents=[common])

    c = cmd("backends", "list backends (of one pool, or all) with states and counters")
    c.add_argument("pool", nargs="?")
    cmd("pools", "list pools")
    c = cmd("add", "register a backend (idempotent for the same address and id)")
    c.add_argument("pool")
    c.add_argument("address", help="host:port")
    c.add_argument("--weight", type=_weight, default=1)
    c.add_argument(
        "--max-conn", type=_weight, default=None, help="its limit (default: the pool's max_conn)"
    )
    c.add_argument("--id", help="stable identity (default: the address)")
    c.add_argument("--meta", action="append", metavar="KEY=VALUE", help="metadata (repeatable)")
    for name, text in (
        ("drain", "stop sending new connections/requests; in-flight ones finish"),
        ("ready", "take traffic again"),
        ("maint", "maintenance: no traffic, like drain"),
    ):
        c = cmd(name, text)
        c.add_argument("pool")
        c.add_argument("backend", help="id or address")
    c = cmd("weight", "set the weight (0-1000)")
    c.add_argument("pool")
    c.add_argument("backend", help="id or address")
    c.add_argument("weight", type=_weight)
    c = cmd("max-conn", "set a backend's limit of concurrent requests/connections (0: none)")
    c.add_argument("pool")
    c.add_argument("backend", help="id or address")
    c.add_argument("max_conn", type=_weight)
    c = cmd("remove", "remove a backend (only once removable, unless --force)")
    c.add_argument("pool")
    c.add_argument("backend", help="id or address")
    c.add_argument("--force", action="store_true", help="close its connections and remove it")
    c = cmd("wait", "wait until a draining backend is removable")
    c.add_argument("pool")
    c.add_argument("backend", help="id or address")
    c.add_argument("--timeout", type=float, default=30.0, help="seconds (default 30)")
    c = cmd("stats", "rates, errors and latency percentiles over a recent window")
    c.add_argument("pool", nargs="?")
    c.add_argument("--window", type=float, default=10.0, help="seconds (default 10, max 60)")
    cmd("reload", "re-read config.toml (refused whole if invalid)")
    cmd("info", "version, uptime and paths of the running lb")
    return p


async def _main(args: argparse.Namespace, socket_path: Path) -> int:
    async with ControlClient(socket_path, timeout=60.0) as client:
        return await COMMANDS[args.command](args, client)


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    args.json = getattr(args, "json", False)
    try:
        if getattr(args, "socket", None):
            socket_path = Path(args.socket)
        else:
            socket_path = socket_from_config(
                getattr(args, "config", "config.toml"),
                lambda text: print(f"lbctl: note: {text}", file=sys.stderr),
            )
        return asyncio.run(_main(args, socket_path))
    except UsageError as exc:
        print(f"lbctl: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except Unreachable as exc:
        print(f"lbctl: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except ApiError as exc:
        where = f"{exc.field}: " if exc.field else ""
        print(f"lbctl: refused (HTTP {exc.status}): {where}{exc.message}", file=sys.stderr)
        return EXIT_REFUSED
    except ControlClientError as exc:
        print(f"lbctl: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

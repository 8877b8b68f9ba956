"""The Python cost of one L7 exchange, in-process: no sockets, no kernel, no other process.

    python -m benchmarks.exchange            # about 10 s
    LB_NO_EXTENSIONS=1 python -m benchmarks.exchange   # all of it as plain Python
    python -m benchmarks.exchange --head browser       # a browser's head (also: ab, close)
    python -m benchmarks.exchange --head close --new-connections   # a connection per request

One ``HttpClientProtocol`` and one pooled ``HttpUpstreamProtocol`` on stand-in transports that
drop what is written, on uvloop. Each exchange feeds wrk's request head to the client side and
nginx's response (head and a 33-byte body, in one buffer) to the upstream side, through the
real parsers, routing, balancing, rewriting, upstream pool and accounting. ``--head`` picks the
request head: wrk's (``minimal``), a browser's (``browser``: ``benchmarks.wrk.BROWSER_HEADERS``),
ab's (``ab``: HTTP/1.0 with ``Connection: Keep-Alive``) or wrk's with ``Connection: close``
(``close``). ``--new-connections`` makes every exchange a new client connection (a new
protocol object, ``connection_made`` and ``connection_lost``), as ``Connection: close`` traffic
is; the upstream connection stays pooled. ``--strategy`` and ``--backends`` set the pool's
balancing (round_robin over one backend by default; with more, each backend has its pooled
upstream connection, and the response goes to the one the exchange attached). For
instruction counts, run it under callgrind at two batch sizes and divide the difference (the
set-up cancels out). The figures are the
minimum over repeats of the mean time per exchange, split into the request side and the
response side: the part of a request's CPU cost that is lb's own Python (the rest is the event
loop and the kernel; see ``benchmarks/cpu.py`` for the whole).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Callable
from typing import Any, cast

import uvloop

from benchmarks.wrk import BROWSER_HEADERS
from lb import _compiled
from lb.config import parse_config
from lb.proxy.context import HttpContext
from lb.proxy.exchange import HttpUpstreamProtocol
from lb.proxy.http import HttpClientProtocol, HttpFactory
from lb.proxy.listener import Listener
from lb.proxy.pool import PoolRuntime
from lb.wire import BackendEntry

REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:18180\r\n\r\n"
HEADS: dict[str, bytes] = {
    "minimal": REQUEST,
    "browser": b"GET / HTTP/1.1\r\nHost: 127.0.0.1:18180\r\n"
    + b"".join(f"{n}: {v}\r\n".encode() for n, v in BROWSER_HEADERS)
    + b"\r\n",
    # What ab -k sends, byte for byte.
    "ab": b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\nHost: 127.0.0.1:18180\r\n"
    b"User-Agent: ApacheBench/2.3\r\nAccept: */*\r\n\r\n",
    "close": b"GET / HTTP/1.1\r\nHost: 127.0.0.1:18180\r\nConnection: close\r\n\r\n",
}
RESPONSE = (
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Wed, 25 Nov 2026 18:50:00 GMT\r\n"
    b"Content-Type: text/plain\r\nContent-Length: 33\r\nConnection: keep-alive\r\n\r\n"
    b"hello from the benchmark backend\n"
)


class _Transport:
    """Takes writes and flow-control calls, and does nothing."""

    def write(self, data: bytes) -> None:
        pass

    def writelines(self, data: Any) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def close(self) -> None:
        pass

    def is_closing(self) -> bool:
        return False

    def get_extra_info(self, name: str) -> Any:
        return ("127.0.0.1", 5555) if name == "peername" else None


async def measure(
    repeats: int,
    batch: int,
    request: bytes = REQUEST,
    new_connections: bool = False,
    strategy: str = "round_robin",
    backends: int = 1,
) -> tuple[float, float]:
    addresses = [f"127.0.0.1:{2 + i}" for i in range(backends)]
    cfg = parse_config(
        {
            "listeners": [{"name": "h", "bind": "127.0.0.1:1", "mode": "http", "pool": "p"}],
            "pools": {"p": {"strategy": strategy, "backends": [{"address": a} for a in addresses]}},
        }
    )
    pool = PoolRuntime("p", cfg.pools["p"])
    ids = ["a"] + [f"b{i}" for i in range(1, backends)]
    pool.apply_snapshot(
        [
            BackendEntry(id=i, address=a, weight=1, effective_weight=1.0)
            for i, a in zip(ids, addresses, strict=True)
        ]
    )
    listener = Listener(cfg.listeners[0], {"p": pool}, asyncio.get_running_loop(), lambda *a: None)
    listener.http = ctx = HttpContext(
        listener.config, listener.loop, listener.connections, listener.access, listener.pools
    )
    client = HttpClientProtocol(listener, ctx)
    client.connection_made(_Transport())  # type: ignore[arg-type]
    # The listener's protocol factory (no edge: a new HttpClientProtocol per call).
    factory = cast(Callable[[], HttpClientProtocol], HttpFactory(listener, ctx))
    upstreams = []
    for i in ids:
        upstream = HttpUpstreamProtocol(pool.backends[i], ctx.upstreams)
        upstream.connection_made(_Transport())  # type: ignore[arg-type]
        ctx.upstreams.release(upstream, 10, 3600.0, 0.0)
        upstreams.append(upstream)
    upstream = upstreams[0]
    to_client, to_upstream = client.data_received, upstream.data_received
    one = backends == 1
    clock = time.perf_counter
    best = (float("inf"), 0.0, 0.0)
    for _ in range(repeats):
        req = resp = 0.0
        for _ in range(batch):
            if one:
                upstream.requests = 0  # stay under upstream_max_requests
            else:
                for up in upstreams:
                    up.requests = 0
            t0 = clock()
            if new_connections:
                # What the listener's factory and uvloop do for an accepted connection.
                client = factory()
                client.connection_made(_Transport())  # type: ignore[arg-type]
                client.data_received(request)
            else:
                to_client(request)
            t1 = clock()
            if one:
                to_upstream(RESPONSE)
            else:  # the connection the exchange attached (a pick among several)
                client.exchange.upstream.data_received(RESPONSE)  # type: ignore[union-attr]
            if new_connections:
                client.connection_lost(None)  # (the response said Connection: close)
            t2 = clock()
            req += t1 - t0
            resp += t2 - t1
        if req + resp < best[0]:
            best = (req + resp, req / batch * 1e6, resp / batch * 1e6)
    if ctx.requests != repeats * batch or ctx.responses[2] != repeats * batch:
        raise RuntimeError("the exchanges did not complete")
    ctx.close()
    return best[1], best[2]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=60)
    ap.add_argument("--batch", type=int, default=2000)
    ap.add_argument("--head", choices=sorted(HEADS), default="minimal", help="the request head")
    ap.add_argument(
        "--new-connections", action="store_true", help="a new client connection per exchange"
    )
    ap.add_argument("--strategy", default="round_robin", help="the pool's strategy")
    ap.add_argument("--backends", type=int, default=1, help="backends in the pool")
    args = ap.parse_args(argv)
    if args.backends < 1:
        ap.error("--backends must be at least 1")
    req, resp = uvloop.run(
        measure(
            args.repeats,
            args.batch,
            HEADS[args.head],
            args.new_connections,
            args.strategy,
            args.backends,
        )
    )
    modules = _compiled.compiled_modules()
    path = (
        f"scan {'compiled' if _compiled.speedups_loaded() else 'in Python'},"
        f" {sum(modules.values())}/{len(modules)} modules compiled"
    )
    print(
        f"one exchange ({args.head} head, {args.strategy} over {args.backends}"
        f" backend{'s' if args.backends > 1 else ''}"
        f"{', new connection' if args.new_connections else ''}; {path}):"
        f" request side {req:.2f} us + response side {resp:.2f} us"
        f" = {req + resp:.2f} us (min of {args.repeats} x {args.batch}; includes two clock reads)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The per-worker pool of idle keep-alive connections to backends, with stand-in transports.

The race covered here was seen once in CI: a backend is killed, its FIN on an idle pooled
connection and a new client request are handled in the same event-loop iteration, and the
request was handed the connection whose parser had just closed (a RuntimeError in the
client's ``data_received``, and an empty answer to the client).
"""

from __future__ import annotations

import asyncio
from typing import Any

from lb.config import parse_config
from lb.proxy.context import HttpContext
from lb.proxy.exchange import HttpUpstreamProtocol
from lb.proxy.listener import Listener
from lb.proxy.pool import PoolRuntime
from lb.wire import BackendEntry


class FakeTransport:
    def __init__(self) -> None:
        self.closed = False

    def write(self, data: bytes) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_extra_info(self, name: str) -> Any:
        return None


def setup() -> tuple[HttpContext, PoolRuntime]:
    cfg = parse_config(
        {
            "listeners": [{"name": "h", "bind": "127.0.0.1:1", "mode": "http", "pool": "p"}],
            "pools": {"p": {"backends": [{"address": "127.0.0.1:2"}]}},
        }
    )
    pool = PoolRuntime("p", cfg.pools["p"])
    pool.apply_snapshot(
        [BackendEntry(id="a", address="127.0.0.1:2", weight=1, effective_weight=1.0)]
    )
    listener = Listener(cfg.listeners[0], {"p": pool}, asyncio.get_running_loop(), lambda *a: None)
    listener.http = ctx = HttpContext(
        listener.config, listener.loop, listener.connections, listener.access, listener.pools
    )
    return ctx, pool


def pooled(ctx: HttpContext, pool: PoolRuntime) -> HttpUpstreamProtocol:
    conn = HttpUpstreamProtocol(pool.backends["a"], ctx.upstreams)
    conn.connection_made(FakeTransport())  # type: ignore[arg-type]
    ctx.upstreams.release(conn, 10, 60.0, 0.0)
    return conn


async def test_an_idle_connection_is_handed_out_again() -> None:
    ctx, pool = setup()
    conn = pooled(ctx, pool)
    assert ctx.upstreams.acquire(pool.backends["a"]) is conn
    ctx.close()


async def test_a_connection_the_backend_closed_is_not_handed_out() -> None:
    ctx, pool = setup()
    conn = pooled(ctx, pool)
    conn.eof_received()  # the FIN; connection_lost has not run yet
    assert ctx.upstreams.acquire(pool.backends["a"]) is None
    assert ctx.upstreams.idle_count == 0
    ctx.close()


async def test_a_connection_whose_parser_closed_is_not_handed_out() -> None:
    ctx, pool = setup()
    conn = pooled(ctx, pool)
    conn.parser.close()  # e.g. unsolicited bytes from the backend made it unusable
    assert ctx.upstreams.acquire(pool.backends["a"]) is None
    ctx.close()

"""What a client connection costs and leaves behind: admission through the listener's
``HttpContext``, and a lost connection freed at once (by reference counting), not left for the
cyclic garbage collector. Stand-in transports, the real parser, exchange and upstream pool."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Iterator
from typing import Any, cast

import pytest

from lb.config import parse_config
from lb.http import RequestHead, RequestParser
from lb.proxy.context import HttpContext, TimedConnection
from lb.proxy.exchange import HttpUpstreamProtocol
from lb.proxy.http import HttpClientProtocol, HttpFactory
from lb.proxy.listener import Listener
from lb.proxy.pool import PoolRuntime
from lb.wire import BackendEntry

RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: keep-alive\r\n\r\nhello"


class Transport:
    def __init__(self) -> None:
        self.closed = False
        self.written: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def writelines(self, data: Any) -> None:
        self.written.extend(bytes(d) for d in data)

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_extra_info(self, name: str) -> Any:
        return ("127.0.0.1", 40000) if name == "peername" else None


@pytest.fixture
def no_gc() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def setup(max_connections: int = 100) -> tuple[Listener, HttpContext, HttpUpstreamProtocol]:
    cfg = parse_config(
        {
            "listeners": [
                {
                    "name": "h",
                    "bind": "127.0.0.1:1",
                    "mode": "http",
                    "pool": "p",
                    "max_connections": max_connections,
                }
            ],
            "pools": {"p": {"backends": [{"address": "127.0.0.1:2"}]}},
        }
    )
    pool = PoolRuntime("p", cfg.pools["p"])
    pool.apply_snapshot(
        [BackendEntry(id="a", address="127.0.0.1:2", weight=1, effective_weight=1.0)]
    )
    listener = Listener(cfg.listeners[0], {"p": pool}, asyncio.get_running_loop(), lambda *a: None)
    conns = cast(set[TimedConnection], listener.connections)
    ctx = listener.http = HttpContext(
        listener.config, listener.loop, conns, listener.access, listener.pools
    )
    ctx.on_empty = listener._check_drained
    upstream = HttpUpstreamProtocol(pool.backends["a"], ctx.upstreams)
    upstream.connection_made(Transport())  # type: ignore[arg-type]
    ctx.upstreams.release(upstream, 10, 3600.0, 0.0)
    return listener, ctx, upstream


def live_connections() -> int:
    return sum(1 for o in gc.get_objects() if isinstance(o, HttpClientProtocol))


async def test_a_connection_closed_after_its_request_is_freed_without_the_gc(
    no_gc: None,
) -> None:
    listener, ctx, upstream = setup()
    before = live_connections()
    for _ in range(3):
        conn = cast(HttpClientProtocol, HttpFactory(listener, ctx)())
        t = Transport()
        conn.connection_made(t)  # type: ignore[arg-type]
        conn.data_received(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        upstream.data_received(RESPONSE)
        assert t.closed and b"".join(t.written).endswith(b"hello")
        assert b"Connection: close\r\n" in b"".join(t.written)
        conn.connection_lost(None)
        del conn
    assert live_connections() == before
    assert listener.accepted == 3 and not listener.connections
    ctx.close()


async def test_a_connection_lost_mid_head_is_freed_without_the_gc(no_gc: None) -> None:
    listener, ctx, _ = setup()
    before = live_connections()
    conn = cast(HttpClientProtocol, HttpFactory(listener, ctx)())
    conn.connection_made(Transport())  # type: ignore[arg-type]
    conn.data_received(b"POST / HTTP/1.1\r\nHost: a\r\n")
    conn.connection_lost(None)
    del conn
    assert live_connections() == before
    ctx.close()


async def test_connections_over_max_connections_are_refused_and_counted() -> None:
    listener, ctx, _ = setup(max_connections=1)
    first, second = Transport(), Transport()
    a = cast(HttpClientProtocol, HttpFactory(listener, ctx)())
    a.connection_made(first)  # type: ignore[arg-type]
    b = cast(HttpClientProtocol, HttpFactory(listener, ctx)())
    b.connection_made(second)  # type: ignore[arg-type]
    assert not first.closed and second.closed
    assert (listener.accepted, listener.rejected, listener.active) == (1, 1, 1)
    # Stopping waits for the open connection; its end resolves the wait.
    waiting = asyncio.ensure_future(listener.wait_idle())
    await asyncio.sleep(0)
    assert not waiting.done()
    a.connection_lost(None)
    await asyncio.wait_for(waiting, 1)
    ctx.close()


class Handler:
    """A request handler that records its events (and can be weakly referenced)."""

    def __init__(self) -> None:
        self.events: list[object] = []

    def on_request_head(self, head: RequestHead) -> None:
        self.events.append(head.method)

    def on_request_body(self, data: bytes) -> None:
        self.events.append(data)

    def on_request_end(self) -> None:
        self.events.append("end")

    def on_request_error(self, status: int, reason: str) -> None:
        self.events.append(status)


def test_an_unbound_parser_lets_go_of_its_handler(no_gc: None) -> None:
    handler = Handler()
    parser = RequestParser(handler)
    parser.feed(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi")
    assert handler.events == [b"POST", b"hi", "end"]
    ref = weakref.ref(handler)
    parser.close()
    parser.unbind()
    del handler
    assert ref() is None
    parser.feed(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")  # closed: nothing, and no error
    parser.feed_eof()


def test_body_and_error_callbacks_are_bound_when_needed() -> None:
    handler = Handler()
    parser = RequestParser(handler)
    parser.feed(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    parser.resume()
    parser.feed(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
    parser.feed(b"2\r\nhi\r\n0\r\n\r\n")
    parser.resume()
    parser.feed(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")
    assert handler.events == [b"GET", "end", b"POST", b"2\r\nhi\r\n0\r\n\r\n", "end", 400]

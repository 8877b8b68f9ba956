"""``lb/proxy/tlsconn.py`` as an adapter, on uvloop and real loopback sockets, with a small
app protocol above it and Python's ``ssl`` (asyncio streams) as the client: the handshake's
timeout and failures, read flow control with records waiting in the BIO, write flow control,
``close`` (with ``close_notify``) and ``abort`` (without).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import uvloop

from lb.proxy.edge import EdgeCounters
from lb.proxy.tlsconn import TlsConnection
from lb.tls import ServerOptions, ServerTls
from tests.certs import Authority


class App:
    """Records what the TLS layer tells it."""

    def __init__(self) -> None:
        self.transport: Any = None
        self.data: list[bytes] = []
        self.events: list[str] = []
        self.lost = asyncio.get_running_loop().create_future()
        self.got_data = asyncio.Event()
        self.pause_on_data = False

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.events.append("made")

    def data_received(self, data: bytes) -> None:
        self.data.append(data)
        self.got_data.set()
        if self.pause_on_data:
            self.transport.pause_reading()

    def eof_received(self) -> bool:
        self.events.append("eof")
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.events.append("lost")
        if not self.lost.done():
            self.lost.set_result(exc)

    def pause_writing(self) -> None:
        self.events.append("pause_writing")

    def resume_writing(self) -> None:
        self.events.append("resume_writing")


Scenario = Callable[[int, list[App], EdgeCounters, ssl.SSLContext], Awaitable[None]]


def run(tmp_path: Path, scenario: Scenario, handshake_timeout: float = 5.0) -> None:
    ca = Authority(tmp_path)
    pair = ca.issue("a", "a.test")
    tls = ServerTls([(str(pair.cert), str(pair.key))], ServerOptions())
    client = ssl.create_default_context(cafile=str(ca.ca_pem))

    async def main() -> None:
        loop = asyncio.get_running_loop()
        counters = EdgeCounters()
        apps: list[App] = []

        def factory() -> Any:
            app = App()
            apps.append(app)
            return TlsConnection(loop, app, tls.default, counters, handshake_timeout)

        server = await loop.create_server(factory, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            async with asyncio.timeout(30):
                await scenario(port, apps, counters, client)
        finally:
            server.close()
            await server.wait_closed()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main())


async def _open(port: int, client: ssl.SSLContext) -> tuple[Any, Any]:
    return await asyncio.open_connection("127.0.0.1", port, ssl=client, server_hostname="a.test")


async def _close(writer: Any) -> None:
    writer.close()
    with contextlib.suppress(OSError, ssl.SSLError):
        await writer.wait_closed()


def test_handshake_timeout_and_a_client_that_leaves(tmp_path: Path) -> None:
    async def scenario(
        port: int, apps: list[App], counters: EdgeCounters, client: ssl.SSLContext
    ) -> None:
        # a client that sends nothing is closed after the handshake timeout
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert await reader.read() == b""
        await _close(writer)
        assert counters.failures["timeout"] == 1
        # one that leaves half-way through its ClientHello is counted as closed
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"\x16\x03\x01\x02\x00\x01")
        writer.write_eof()
        assert await reader.read() == b""
        await _close(writer)
        for _ in range(50):
            if counters.failures["closed"]:
                break
            await asyncio.sleep(0.02)
        assert counters.failures["closed"] == 1
        assert all(app.events == [] for app in apps)  # the app never heard of them
        # and one that completes is counted by version
        reader, writer = await _open(port, client)
        await asyncio.sleep(0.05)
        assert counters.handshakes["TLSv1.3"] == 1
        assert apps[-1].events == ["made"]
        await _close(writer)
        await apps[-1].lost

    run(tmp_path, scenario, handshake_timeout=0.3)


def test_read_flow_control_keeps_records_in_the_bio(tmp_path: Path) -> None:
    async def scenario(
        port: int, apps: list[App], counters: EdgeCounters, client: ssl.SSLContext
    ) -> None:
        reader, writer = await _open(port, client)
        await asyncio.sleep(0.05)
        app = apps[-1]
        app.pause_on_data = True
        for part in (b"one", b"two", b"three"):  # three records, likely in one read
            writer.write(part)
        await writer.drain()
        await app.got_data.wait()
        await asyncio.sleep(0.1)
        assert app.data == [b"one"]  # paused: the others wait undecrypted
        assert not app.transport.is_reading()
        while b"".join(app.data) != b"onetwothree":
            app.got_data.clear()
            app.transport.resume_reading()
            await asyncio.wait_for(app.got_data.wait(), 5)
        # close: the client reads a clean end (close_notify), the app hears connection_lost
        app.transport.close()
        assert app.transport.is_closing()
        assert await reader.read() == b""
        assert await app.lost is None
        await _close(writer)

    run(tmp_path, scenario)


def test_write_flow_control_and_abort(tmp_path: Path) -> None:
    async def scenario(
        port: int, apps: list[App], counters: EdgeCounters, client: ssl.SSLContext
    ) -> None:
        reader, writer = await _open(port, client)
        await asyncio.sleep(0.05)
        app = apps[-1]
        app.transport.set_write_buffer_limits(high=64 * 1024)
        block = b"x" * 65536
        for _ in range(256):  # 16 MiB to a client that does not read yet
            app.transport.writelines([block[:100], block[100:]])
            if "pause_writing" in app.events:
                break
        assert "pause_writing" in app.events
        assert app.transport.get_write_buffer_size() > 0
        got = 0
        while "resume_writing" not in app.events:
            got += len(await reader.read(1 << 20))
        assert got > 0
        assert app.transport.get_extra_info("peername")[0] == "127.0.0.1"
        assert app.transport.get_extra_info("ssl_object").version() == "TLSv1.3"
        assert not app.transport.can_write_eof()
        # abort: no close_notify, so the client sees a truncated stream
        app.transport.abort()
        with pytest.raises((ssl.SSLError, ConnectionResetError, asyncio.IncompleteReadError)):
            while True:
                if not await reader.read(1 << 20):
                    raise asyncio.IncompleteReadError(b"", None)
        await app.lost
        await _close(writer)

    run(tmp_path, scenario)

"""``lb/proxy/tlsconn.py`` reading records however TCP cuts them: on uvloop and real loopback
sockets, with a client that drives its own ``ssl.SSLObject`` over a plain connection, so that
the test chooses which bytes of which records each ``send`` carries.

The common case (one whole record in one read, after a read that left nothing behind) takes
``_read_record``; a record cut in two, several records in one read, a record and part of the
next, and records larger than one read take the general loop. Every cut must deliver the same
bytes in order, with TLS 1.2 and TLS 1.3, and a ``close_notify`` must end the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import uvloop

from lb.proxy.edge import EdgeCounters
from lb.proxy.tlsconn import TlsConnection
from lb.tls import ServerOptions, ServerTls
from tests.certs import Authority

Cuts = Callable[[list[bytes]], list[int]]


def cut_at(offset: int, records: list[bytes]) -> list[int]:
    """One cut in the first record, at ``offset`` (from its end when negative)."""
    return [offset % len(records[0])]


class Echo:
    """Records what the TLS layer delivers and writes it back."""

    def __init__(self) -> None:
        self.transport: Any = None
        self.data: list[bytes] = []
        self.events: list[str] = []
        self.lost = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.data.append(data)
        self.transport.write(data)

    def eof_received(self) -> bool:
        self.events.append("eof")
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.events.append("lost")
        if not self.lost.done():
            self.lost.set_result(exc)

    def pause_writing(self) -> None:
        pass

    def resume_writing(self) -> None:
        pass


class RecordClient:
    """A TLS client over a plain stream: it makes records and sends the bytes it is told to."""

    def __init__(self, ctx: ssl.SSLContext, reader: Any, writer: Any) -> None:
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.sslobj = ctx.wrap_bio(self.incoming, self.outgoing, server_hostname="a.test")
        self.reader = reader
        self.writer = writer

    async def handshake(self) -> None:
        while True:
            try:
                self.sslobj.do_handshake()
                break
            except ssl.SSLWantReadError:
                await self.send(self.outgoing.read())
                self.incoming.write(await self.reader.read(65536))
        await self.send(self.outgoing.read())

    def record(self, payload: bytes) -> bytes:
        """The ciphertext of ``payload`` (one record up to 16 KiB, more records beyond)."""
        self.sslobj.write(payload)
        return self.outgoing.read()

    async def send(self, data: bytes) -> None:
        if data:
            self.writer.write(data)
            await self.writer.drain()

    async def echo(self, size: int) -> bytes:
        """Read until ``size`` bytes of plaintext came back."""
        got = b""
        while len(got) < size:
            try:
                got += self.sslobj.read(65536)
            except ssl.SSLWantReadError:
                data = await self.reader.read(65536)
                assert data, "the server closed"
                self.incoming.write(data)
        return got


@pytest.mark.parametrize("version", ["TLSv1.2", "TLSv1.3"])
def test_every_cut_of_the_records_delivers_the_same_bytes(tmp_path: Path, version: str) -> None:
    ca = Authority(tmp_path)
    pair = ca.issue("a", "a.test")
    tls = ServerTls([(str(pair.cert), str(pair.key))], ServerOptions())
    ctx = ssl.create_default_context(cafile=str(ca.ca_pem))
    ctx.maximum_version = ssl.TLSVersion[version.replace(".", "_")]

    async def main() -> None:
        loop = asyncio.get_running_loop()
        conns: list[TlsConnection] = []
        apps: list[Echo] = []

        def factory() -> Any:
            app = Echo()
            apps.append(app)
            conn = TlsConnection(loop, app, tls.default, EdgeCounters(), 5.0)
            conns.append(conn)
            return conn

        server = await loop.create_server(factory, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            async with asyncio.timeout(30):
                client = RecordClient(ctx, reader, writer)
                await client.handshake()
                assert client.sslobj.version() == version
                conn, app = conns[0], apps[0]
                sent: list[bytes] = []

                async def exchange(payloads: list[bytes], cuts: Cuts = lambda r: []) -> None:
                    """Send the records of ``payloads`` cut where ``cuts`` says (offsets into
                    their bytes, given the records), a pause between the pieces; wait for the
                    echo."""
                    records = [client.record(p) for p in payloads]
                    wire = b"".join(records)
                    edges = [0, *cuts(records), len(wire)]
                    for a, b in itertools.pairwise(edges):
                        await client.send(wire[a:b])
                        await asyncio.sleep(0.02)
                    size = sum(map(len, payloads))
                    assert await client.echo(size) == b"".join(payloads)
                    sent.extend(payloads)

                # one whole record per read: the short way, and it leaves the connection drained
                for n in range(3):
                    await exchange([b"GET /%d HTTP/1.1\r\nHost: a.test\r\n\r\n" % n])
                    assert conn.drained
                # one record cut anywhere: inside its header, just after it, near its end
                request = b"GET /cut HTTP/1.1\r\nHost: a.test\r\n\r\n"
                for cut in (1, 3, 5, 6, 20, -1):
                    await exchange([request], functools.partial(cut_at, cut))
                    assert conn.drained  # and the next whole record takes the short way again
                # two records in one read; a record and the start of the next; a record of one
                # byte; three records of 16 KiB and more in one write
                await exchange([b"first", b"second"])
                await exchange([b"third", b"fourth"], lambda r: [len(r[0]) + 7])
                await exchange([b"x"])
                await exchange([bytes(range(256)) * 160])
                assert conn.drained
                assert b"".join(app.data) == b"".join(sent)
                # the client's close_notify, a whole record of its own: the app hears the end,
                # closes, and the client reads the server's close_notify
                with contextlib.suppress(ssl.SSLWantReadError):
                    client.sslobj.unwrap()
                await client.send(client.outgoing.read())
                assert await app.lost is None
                assert app.events == ["eof", "lost"]
                rest = await reader.read()
                client.incoming.write(rest)
                client.incoming.write_eof()
                client.sslobj.unwrap()  # raises unless the server's close_notify came
        finally:
            writer.close()
            server.close()
            await server.wait_closed()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main())

"""TLS 1.3 session tickets from ``lb/proxy/tlsconn.py``: held back after the handshake and sent
with the first thing the server writes (one ``send`` for the tickets and a response), with
``close``'s ``close_notify``, or when the handshake timer fires if nothing was written by then.
Each way, the client gets a ticket that resumes the session on its next connection.

On uvloop and real loopback sockets; the client drives its own ``ssl.SSLObject`` over a plain
connection (``RecordClient``), so the test sees exactly which bytes arrive when.
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
from tests.integration.test_tls_records import Echo, RecordClient

REQUEST = b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n"


class Closer(Echo):
    """Closes the connection at the first request, without writing anything."""

    def data_received(self, data: bytes) -> None:
        self.data.append(data)
        self.transport.close()


async def nothing_arrives(reader: asyncio.StreamReader, seconds: float) -> bool:
    try:
        async with asyncio.timeout(seconds):
            await reader.read(65536)
    except TimeoutError:
        return True
    return False


def run(
    tmp_path: Path,
    app_class: type[Echo],
    handshake_timeout: float,
    body: Callable[[RecordClient, asyncio.StreamReader, Echo], Awaitable[None]],
) -> tuple[EdgeCounters, list[bool]]:
    """Two connections: the first runs ``body``; the second offers the first's session and
    says whether it was resumed. Returns the counters and, per connection, session_reused."""
    ca = Authority(tmp_path)
    pair = ca.issue("a", "a.test")
    tls = ServerTls([(str(pair.cert), str(pair.key))], ServerOptions())
    ctx = ssl.create_default_context(cafile=str(ca.ca_pem))
    counters = EdgeCounters()
    reused: list[bool] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        apps: list[Echo] = []

        def factory() -> Any:
            app = app_class()
            apps.append(app)
            return TlsConnection(loop, app, tls.default, counters, handshake_timeout)

        server = await loop.create_server(factory, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        session: ssl.SSLSession | None = None
        try:
            async with asyncio.timeout(30):
                for n in range(2):
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
                    client = RecordClient(ctx, reader, writer)
                    if session is not None:
                        client.sslobj.session = session
                    try:
                        await client.handshake()
                        assert client.sslobj.version() == "TLSv1.3"
                        reused.append(client.sslobj.session_reused)
                        if n == 0:
                            await body(client, reader, apps[0])
                            session = client.sslobj.session
                            assert session is not None and session.has_ticket
                    finally:
                        writer.close()
        finally:
            server.close()
            await server.wait_closed()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main())
    return counters, reused


def test_tickets_go_with_the_first_response(tmp_path: Path) -> None:
    async def body(client: RecordClient, reader: asyncio.StreamReader, app: Echo) -> None:
        # after the handshake the server sends nothing of its own: the tickets wait
        assert await nothing_arrives(reader, 0.3)
        await client.send(client.record(REQUEST))
        # the tickets and the answer come in one send: one read holds all of them
        data = await reader.read(65536)
        client.incoming.write(data)
        assert client.sslobj.read(65536) == REQUEST
        with pytest.raises(ssl.SSLWantReadError):
            client.sslobj.read(65536)  # nothing else came
        assert client.sslobj.session is not None and client.sslobj.session.has_ticket
        # later records are not held back
        assert await client.echo(0) == b""
        await client.send(client.record(b"again"))
        assert await client.echo(5) == b"again"

    counters, reused = run(tmp_path, Echo, 10.0, body)
    assert reused == [False, True]
    assert counters.resumed == 1
    assert counters.handshakes["TLSv1.3"] == 2


def test_tickets_go_with_close_notify(tmp_path: Path) -> None:
    async def body(client: RecordClient, reader: asyncio.StreamReader, app: Echo) -> None:
        await client.send(client.record(REQUEST))
        rest = await reader.read()  # the server closes: tickets, close_notify, FIN
        client.incoming.write(rest)
        assert client.sslobj.read(65536) == b""  # no data: the close_notify after the tickets
        assert app.data == [REQUEST]

    counters, reused = run(tmp_path, Closer, 10.0, body)
    assert reused == [False, True]
    assert counters.resumed == 1


def test_tickets_go_when_the_handshake_timer_fires(tmp_path: Path) -> None:
    class Silent(Echo):
        def data_received(self, data: bytes) -> None:
            self.data.append(data)

    async def body(client: RecordClient, reader: asyncio.StreamReader, app: Echo) -> None:
        await client.send(client.record(REQUEST))
        assert await nothing_arrives(reader, 0.1)  # the app answers nothing
        data = await reader.read(65536)  # the timer (0.5 s after the connection) sends them
        client.incoming.write(data)
        with pytest.raises(ssl.SSLWantReadError):
            client.sslobj.read(65536)  # tickets only, no data
        assert app.data == [REQUEST]
        assert app.events == []  # the connection is still open
        with contextlib.suppress(ssl.SSLWantReadError):
            client.sslobj.unwrap()

    counters, reused = run(tmp_path, Silent, 0.5, body)
    assert reused == [False, True]
    assert counters.failures["timeout"] == 0


@pytest.mark.parametrize("shape", ["one record", "two records", "a record cut"])
def test_the_first_request_in_the_read_of_the_finished(tmp_path: Path, shape: str) -> None:
    """The client's Finished and its first request (one record, two, or one record cut in
    two reads) in the same read: the request reaches the app in order, the tickets come with
    the answer, and the connection is left drained (the next record takes the short way)."""
    ca = Authority(tmp_path)
    pair = ca.issue("a", "a.test")
    tls = ServerTls([(str(pair.cert), str(pair.key))], ServerOptions())
    ctx = ssl.create_default_context(cafile=str(ca.ca_pem))

    async def main() -> None:
        loop = asyncio.get_running_loop()
        conns: list[TlsConnection] = []
        apps: list[Echo] = []

        def factory() -> Any:
            apps.append(Echo())
            conns.append(TlsConnection(loop, apps[-1], tls.default, EdgeCounters(), 10.0))
            return conns[-1]

        server = await loop.create_server(factory, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            async with asyncio.timeout(30):
                client = RecordClient(ctx, reader, writer)
                while True:
                    try:
                        client.sslobj.do_handshake()
                        break
                    except ssl.SSLWantReadError:
                        await client.send(client.outgoing.read())
                        client.incoming.write(await reader.read(65536))
                assert client.sslobj.version() == "TLSv1.3"
                finished = client.outgoing.read()  # not sent yet
                first, second = REQUEST, b"GET /second HTTP/1.1\r\nHost: a.test\r\n\r\n"
                if shape == "one record":
                    await client.send(finished + client.record(first))
                    expected = first
                elif shape == "two records":
                    await client.send(finished + client.record(first) + client.record(second))
                    expected = first + second
                else:
                    record = client.record(first)
                    await client.send(finished + record[:9])
                    await asyncio.sleep(0.05)
                    await client.send(record[9:])
                    expected = first
                assert await client.echo(len(expected)) == expected
                assert client.sslobj.session is not None and client.sslobj.session.has_ticket
                conn, app = conns[0], apps[0]
                assert b"".join(app.data) == expected
                assert conn.drained
                assert conn.held == 0
                await client.send(client.record(b"next"))
                assert await client.echo(4) == b"next"
                assert conn.drained
        finally:
            writer.close()
            server.close()
            await server.wait_closed()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main())

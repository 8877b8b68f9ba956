"""The checker over real loopback sockets, in-process: probes and membership following."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from lb.config import HealthConfig, parse_config
from lb.health.checker import CheckResult, http_probe, new_session, tcp_probe
from lb.health.manager import HealthManager
from lb.model import HealthState
from lb.state import ClusterState
from tests.helpers import free_port

Responder = Callable[[bytes], bytes | None]  # request head -> raw response (None: say nothing)


@contextlib.asynccontextmanager
async def server(respond: Responder, seen: list[bytes] | None = None) -> AsyncIterator[str]:
    handlers: set[asyncio.Task[Any]] = set()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        handlers.add(task)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            if seen is not None:
                seen.append(head)
            answer = respond(head)
            if answer is None:
                await asyncio.sleep(10)  # accept, read, never answer: a stuck backend
            else:
                writer.write(answer)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()
            handlers.discard(task)

    srv = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    try:
        yield f"127.0.0.1:{port}"
    finally:
        srv.close()
        for t in list(handlers):
            t.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        await srv.wait_closed()


def response(status: int, body: bytes = b"ok", *, chunked: bool = False) -> bytes:
    if chunked:
        framed = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
        return b"HTTP/1.1 %d X\r\nTransfer-Encoding: chunked\r\n\r\n%s" % (status, framed)
    return b"HTTP/1.1 %d X\r\nContent-Length: %d\r\n\r\n%s" % (status, len(body), body)


def http(**kw: Any) -> HealthConfig:
    return HealthConfig.model_validate({"type": "http", "interval": "1s", "timeout": "200ms", **kw})


async def probe(respond: Responder, **kw: Any) -> CheckResult:
    session = new_session()
    try:
        async with server(respond) as address:
            return await http_probe(session, address, http(**kw))
    finally:
        await session.close()


@pytest.mark.parametrize(
    ("respond", "kw", "passed", "detail"),
    [
        (lambda _h: response(200), {}, True, "HTTP 200 in "),
        (lambda _h: response(302), {}, True, "HTTP 302 in "),  # redirects are not followed
        (lambda _h: response(503), {}, False, ", expected 200-399"),
        (lambda _h: response(204, b""), {"expect_status": "200,204"}, True, "HTTP 204"),
        (lambda _h: response(200, b"degraded"), {"expect_body": "ok"}, False, "lacks 'ok'"),
        (lambda _h: response(200, b"all ok", chunked=True), {"expect_body": "ok"}, True, "200"),
        (lambda _h: b"", {}, False, "connection closed before a response"),
        (lambda _h: b"SPDY/9 what\r\n\r\n", {}, False, "bad response: "),
        (lambda _h: None, {}, False, "timeout after 200ms waiting for the response"),
    ],
)
async def test_http_probe(
    respond: Responder, kw: dict[str, Any], passed: bool, detail: str
) -> None:
    result = await probe(respond, **kw)
    assert result.passed is passed, result
    assert detail in result.detail, result


async def test_http_probe_sends_method_path_and_host() -> None:
    seen: list[bytes] = []
    session = new_session()
    try:
        async with server(lambda _h: response(200), seen) as address:
            cfg = http(method="OPTIONS", path="/healthz?deep=1", host="app.local")
            assert (await http_probe(session, address, cfg)).passed
    finally:
        await session.close()
    head = seen[0].decode().lower()
    assert head.startswith("options /healthz?deep=1 http/1.1\r\n")
    assert "\r\nhost: app.local\r\n" in head and "user-agent: lb-health-check" in head


async def test_refused_and_frozen_backends() -> None:
    port = free_port()
    session = new_session()
    try:
        r = await http_probe(session, f"127.0.0.1:{port}", http())
        assert (r.passed, r.detail) == (False, "connection refused")
        r = await tcp_probe(f"127.0.0.1:{port}", 0.2)
        assert (r.passed, r.detail) == (False, "connection refused")
        # A listening socket that never accepts is what SIGSTOP looks like: the kernel finishes
        # the handshake, nobody answers. TCP checks pass; HTTP checks time out.
        with socket.socket() as frozen:
            frozen.bind(("127.0.0.1", 0))
            frozen.listen(16)
            address = f"127.0.0.1:{frozen.getsockname()[1]}"
            r = await tcp_probe(address, 0.2)
            assert r.passed and r.detail.startswith("connected in ")
            r = await http_probe(session, address, http())
            assert (r.passed, r.detail) == (False, "timeout after 200ms waiting for the response")
    finally:
        await session.close()


# -- membership -------------------------------------------------------------------------------


def cluster(backends: list[str], **health: Any) -> ClusterState:
    cfg = parse_config(
        {
            "listeners": [{"name": "l", "bind": "127.0.0.1:8000", "pool": "web"}],
            "pools": {
                "web": {
                    "backends": [{"address": a} for a in backends],
                    "health": {"interval": "100ms", "fall": 2, "rise": 2, **health},
                },
                "plain": {"backends": [{"address": "127.0.0.1:1"}]},
            },
        }
    )
    return ClusterState(cfg, now=asyncio.get_running_loop().time())


async def wait_for(cond: Callable[[], bool], limit: float = 3.0) -> float:
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    while not cond():
        assert loop.time() - t0 < limit, "condition not met in time"
        await asyncio.sleep(0.01)
    return loop.time() - t0


async def test_checks_follow_membership_and_state(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO")
    async with server(lambda _h: response(200)) as good:
        dead = f"127.0.0.1:{free_port()}"
        st = cluster([good, dead], type="http", path="/healthz")
        manager = HealthManager(st, asyncio.get_running_loop())
        st.on_change = manager.backend_changed
        st.on_remove = manager.backend_removed
        manager.start()
        try:
            await manager.wait_initial()
            assert st.backend("web", good).health is HealthState.UP
            assert st.backend("web", dead).health is HealthState.DOWN
            assert st.backend("web", dead).last_check == "connection refused"
            assert f"web/{dead} checking -> down: first HTTP check failed" in caplog.text
            # The pool without a health section has no task and stays up.
            assert set(manager.checker.tasks) == {("web", good), ("web", dead)}
            assert st.backend("plain", "127.0.0.1:1").health is HealthState.UP

            # Added at runtime: checked at once, traffic after its first passing check.
            async with server(lambda _h: response(200)) as extra:
                b, _ = st.add_backend("web", extra, now=asyncio.get_running_loop().time())
                assert b.health is HealthState.CHECKING
                assert ("web", extra) in manager.checker.tasks
                took = await wait_for(lambda: b.health is HealthState.UP)
                assert took < 0.5
                # Removed at runtime: its task ends.
                st.remove("web", extra)
                assert ("web", extra) not in manager.checker.tasks
            assert caplog.text.count(f"web/{extra} checking -> up") == 1
        finally:
            await manager.stop()
        assert not manager.checker.tasks

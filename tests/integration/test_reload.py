"""A reload reaches every listener setting it says it changed, for open connections too.

lb runs as a real process; steady keep-alive load from an aiohttp client runs through the
listener under test for the whole test and must see no failure. Each reloadable setting is
changed with ``lbctl reload`` and the new behaviour is observed twice: on a keep-alive
connection opened (and used) before the reload, and on a new connection.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from tests.helpers import Proc, ProcessGroup, free_port, to_toml


class Conn:
    """A raw keep-alive client connection: one request at a time, whole responses."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.buf = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def response(self) -> tuple[int, dict[str, str], bytes]:
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"closed before a response head: {self.buf!r}")
            self.buf += chunk
        head, _, rest = self.buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        length = int(headers.get("content-length", "0"))
        while len(rest) < length:
            chunk = self.sock.recv(65536)
            if not chunk:
                break
            rest += chunk
        self.buf = rest[length:]
        return int(lines[0].split()[1]), headers, rest[:length]

    def get(self, path: str = "/", extra: str = "") -> tuple[int, dict[str, str], bytes]:
        self.send(f"GET {path} HTTP/1.1\r\nHost: test\r\n{extra}\r\n".encode())
        return self.response()

    def closed_by_peer(self, timeout: float = 3.0) -> bool:
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(1) == b""
        except (TimeoutError, ConnectionResetError):
            return False

    def close(self) -> None:
        self.sock.close()


def reload(lb: Proc, cfg: dict[str, Any]) -> str:
    path = Path(lb.extra["config_path"])
    path.write_text(to_toml(cfg))
    r = subprocess.run(
        [sys.executable, "-m", "lb.control.lbctl", "-c", str(path), "reload"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


async def steady_load(port: int, stop: asyncio.Event, failures: list[str]) -> int:
    """Keep-alive GETs on 3 connections until ``stop`` (bounded: 120 s at most)."""
    done = 0
    deadline = time.monotonic() + 120
    conn = aiohttp.TCPConnector(limit=3)
    async with aiohttp.ClientSession(connector=conn) as session:

        async def worker() -> None:
            nonlocal done
            while not stop.is_set() and time.monotonic() < deadline:
                try:
                    async with session.get(f"http://127.0.0.1:{port}/load") as r:
                        await r.read()
                        if r.status != 200:
                            failures.append(f"status {r.status}")
                        done += 1
                except (aiohttp.ClientError, OSError) as exc:
                    failures.append(repr(exc))
                await asyncio.sleep(0.005)

        await asyncio.gather(*(worker() for _ in range(3)))
    return done


def http_config(port: int, a: int, b: int, **listener: Any) -> dict[str, Any]:
    return {
        "lb": {"workers": 1, "grace": "2s"},
        "listeners": [
            {"name": "web", "bind": f"127.0.0.1:{port}", "mode": "http", "pool": "a", **listener}
        ],
        "pools": {
            "a": {"backends": [{"address": f"127.0.0.1:{a}"}]},
            "b": {"backends": [{"address": f"127.0.0.1:{b}"}]},
        },
    }


def access_lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


async def wait_for(check: Any) -> None:
    async with asyncio.timeout(5.0):
        while not check():  # noqa: ASYNC110 (polls a file another process writes)
            await asyncio.sleep(0.05)


async def test_http_listener_reload_reaches_open_and_new_connections(
    procs: ProcessGroup, tmp_path: Path
) -> None:
    a, b = procs.backend("a0"), procs.backend("b0")
    port = free_port()
    cfg = http_config(port, a.port, b.port)
    lb = procs.lb(cfg)
    stop, failures = asyncio.Event(), list[str]()
    load = asyncio.create_task(steady_load(port, stop, failures))
    try:
        await asyncio.sleep(0.3)
        t = asyncio.to_thread

        # -- a route added, then removed ------------------------------------------------------
        kept = Conn(port)
        assert (await t(kept.get, "/api/x"))[1]["x-backend"] == "a0"
        routes = [{"path_prefix": "/api/", "pool": "b"}]
        out = await t(reload, lb, http_config(port, a.port, b.port, routes=routes))
        assert "listener web changed" in out, out
        assert (await t(kept.get, "/api/x"))[1]["x-backend"] == "b0"
        assert (await t(kept.get, "/other"))[1]["x-backend"] == "a0"
        new = Conn(port)
        assert (await t(new.get, "/api/x"))[1]["x-backend"] == "b0"
        new.close()
        await t(reload, lb, http_config(port, a.port, b.port))
        assert (await t(kept.get, "/api/x"))[1]["x-backend"] == "a0"
        new = Conn(port)
        assert (await t(new.get, "/api/x"))[1]["x-backend"] == "a0"
        new.close()

        # -- via --------------------------------------------------------------------------------
        status, _, body = await t(kept.get, "/headers")
        assert status == 200 and b"edge-7" not in body
        await t(reload, lb, http_config(port, a.port, b.port, via="edge-7"))
        for conn in (kept, new := Conn(port)):
            status, _, body = await t(conn.get, "/headers")
            assert status == 200 and b"1.1 edge-7" in body, body
        new.close()

        # -- a size limit (the request line) ----------------------------------------------------
        long_path = "/" + "x" * 300
        assert (await t(kept.get, long_path))[0] == 200
        cfg_limit = http_config(port, a.port, b.port, via="edge-7", max_request_line=128)
        await t(reload, lb, cfg_limit)
        assert (await t(kept.get, "/"))[0] == 200  # the kept connection still works
        for conn in (kept, new := Conn(port)):
            assert (await t(conn.get, long_path))[0] == 414
            assert await t(conn.closed_by_peer)
        new.close()

        # -- the header timeout -----------------------------------------------------------------
        kept.close()  # closed by lb after its 414
        kept = Conn(port)
        assert (await t(kept.get, "/"))[0] == 200
        await t(reload, lb, http_config(port, a.port, b.port, header_timeout="1s"))
        for conn in (kept, new := Conn(port)):
            started = time.monotonic()
            conn.send(b"GET / HTTP/1.1\r\nHost: test\r\n")  # never finished
            status, _, _ = await t(conn.response)
            waited = time.monotonic() - started
            assert status == 408 and 0.9 < waited < 5, (status, waited)
        new.close()

        # -- the access log ---------------------------------------------------------------------
        kept.close()  # closed by lb after its 408
        log_path = tmp_path / "access.jsonl"
        kept = Conn(port)
        assert (await t(kept.get, "/before-log"))[0] == 200
        await t(reload, lb, http_config(port, a.port, b.port, access_log=str(log_path)))
        new = Conn(port)
        assert (await t(kept.get, "/kept-logged"))[0] == 200
        assert (await t(new.get, "/new-logged"))[0] == 200
        await wait_for(
            lambda: {"/kept-logged", "/new-logged"} <= {x["path"] for x in access_lines(log_path)}
        )
        assert "/before-log" not in {x["path"] for x in access_lines(log_path)}
        await t(reload, lb, http_config(port, a.port, b.port))
        await asyncio.sleep(1.2)  # what was buffered is written by now
        count = len(access_lines(log_path))
        assert (await t(kept.get, "/not-logged"))[0] == 200
        await asyncio.sleep(1.5)
        assert len(access_lines(log_path)) == count
        new.close()

        # -- max_connections (the load's 3, ``kept``, then 2 more) ------------------------------
        await t(reload, lb, http_config(port, a.port, b.port, max_connections=5))
        assert (await t(kept.get, "/"))[0] == 200  # open connections are kept
        fifth = Conn(port)
        assert (await t(fifth.get, "/"))[0] == 200
        sixth = Conn(port)
        assert await t(sixth.closed_by_peer)  # refused: accepted and closed at once
        sixth.close()
        await t(reload, lb, http_config(port, a.port, b.port))
        seventh = Conn(port)
        assert (await t(seventh.get, "/"))[0] == 200
        for c in (fifth, seventh, kept):
            c.close()
    finally:
        stop.set()
        done = await load
    assert not failures, failures[:5]
    assert done > 50, done  # the load really ran throughout


def tcp_config(port: int, a: int, **listener: Any) -> dict[str, Any]:
    return {
        "lb": {"workers": 1, "grace": "2s"},
        "listeners": [
            {"name": "relay", "bind": f"127.0.0.1:{port}", "mode": "tcp", "pool": "a", **listener}
        ],
        "pools": {"a": {"backends": [{"address": f"127.0.0.1:{a}"}]}},
    }


async def test_tcp_listener_reload_reaches_open_and_new_connections(
    procs: ProcessGroup, tmp_path: Path
) -> None:
    a = procs.backend("a0")
    port = free_port()
    lb = procs.lb(tcp_config(port, a.port))
    stop, failures = asyncio.Event(), list[str]()
    load = asyncio.create_task(steady_load(port, stop, failures))
    try:
        await asyncio.sleep(0.3)
        t = asyncio.to_thread

        # -- the idle timeout: an open, silent relay is closed once it is shortened ------------
        kept = Conn(port)
        assert (await t(kept.get, "/"))[0] == 200
        await t(reload, lb, tcp_config(port, a.port, idle_timeout="1s"))
        new = Conn(port)
        assert (await t(new.get, "/"))[0] == 200
        started = time.monotonic()
        assert await t(kept.closed_by_peer, 5.0)
        assert await t(new.closed_by_peer, 5.0)
        assert time.monotonic() - started < 4
        kept.close()
        new.close()
        await t(reload, lb, tcp_config(port, a.port))

        # -- the access log: one line per relay, once it ends ---------------------------------
        log_path = tmp_path / "relay.jsonl"
        kept = Conn(port)
        assert (await t(kept.get, "/"))[0] == 200
        await t(reload, lb, tcp_config(port, a.port, access_log=str(log_path)))
        new = Conn(port)
        assert (await t(new.get, "/"))[0] == 200
        kept.close()
        new.close()
        await wait_for(lambda: len(access_lines(log_path)) >= 2)
        lines = access_lines(log_path)
        assert all(x["backend"] == f"127.0.0.1:{a.port}" and x["bytes_out"] > 0 for x in lines)
        await t(reload, lb, tcp_config(port, a.port))

        # -- max_connections (the load's 3, ``kept``, then 2 more) ------------------------------
        kept = Conn(port)
        assert (await t(kept.get, "/"))[0] == 200
        await t(reload, lb, tcp_config(port, a.port, max_connections=5))
        assert (await t(kept.get, "/"))[0] == 200
        fifth = Conn(port)
        assert (await t(fifth.get, "/"))[0] == 200
        sixth = Conn(port)
        assert await t(sixth.closed_by_peer)
        sixth.close()
        await t(reload, lb, tcp_config(port, a.port))
        seventh = Conn(port)
        assert (await t(seventh.get, "/"))[0] == 200
        for c in (kept, fifth, seventh):
            c.close()
    finally:
        stop.set()
        done = await load
    assert not failures, failures[:5]
    assert done > 50, done

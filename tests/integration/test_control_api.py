"""The control API in-process: a Supervisor without workers, its real unix socket, the real
client. Every refusal is a JSON 4xx naming the field, and leaves the state as it was."""

from __future__ import annotations

import asyncio
import os
import socket
import stat
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from yarl import URL

from lb import persist
from lb.config import load_config
from lb.control import lbctl
from lb.control.client import ApiError, ControlClient, Unreachable
from lb.control.errors import ControlStartupError
from lb.control.openapi import build
from lb.supervisor import StartupError, Supervisor
from lb.wire import ToWorker
from tests.helpers import free_port, to_toml


def write_config(path: Path, admin: dict[str, Any] | None = None, **pool: Any) -> None:
    cfg = {
        "lb": {"workers": 0},
        **({"admin": admin} if admin is not None else {}),
        "listeners": [{"name": "l", "bind": f"127.0.0.1:{free_port()}", "pool": "web"}],
        "pools": {
            "web": {
                "strategy": "round_robin",
                **pool,
                "backends": [{"address": "127.0.0.1:9001"}, {"address": "127.0.0.1:9002"}],
            }
        },
    }
    path.write_text(to_toml(cfg))


async def start(path: Path) -> Supervisor:
    sup = Supervisor(load_config(path), str(path), "text", "info")
    await sup.control.prepare()
    await sup.control.serve()
    return sup


@pytest.fixture
async def lb(tmp_path: Path) -> AsyncIterator[tuple[Supervisor, ControlClient]]:
    path = tmp_path / "lb.toml"
    write_config(path)
    sup = await start(path)
    client = ControlClient(sup.control.socket_path)
    try:
        yield sup, client
    finally:
        await client.close()
        await sup.control.close()


async def listing(client: ControlClient) -> Any:
    return (await client.pools()).model_dump(mode="json")


async def raw(
    client: ControlClient,
    method: str,
    path: str,
    body: bytes | None = None,
    content_type: str | None = "application/json",
) -> tuple[int, Any]:
    """A call bypassing the typed methods (to send what they would never send). A body goes
    with ``content_type``; ``None`` sends no Content-Type header at all."""
    assert client.socket_path is not None
    conn = aiohttp.UnixConnector(path=str(client.socket_path))
    headers = {"Content-Type": content_type} if body is not None and content_type else {}
    async with (
        aiohttp.ClientSession(connector=conn) as s,
        s.request(
            method,
            URL("http://lb" + path, encoded=True),
            data=body,
            headers=headers,
            skip_auto_headers=["Content-Type"],
        ) as r,
    ):
        assert r.content_type == "application/json"
        return r.status, await r.json()


async def test_socket_is_0600_in_a_private_folder(lb: tuple[Supervisor, ControlClient]) -> None:
    sup, _ = lb
    st = os.stat(sup.control.socket_path)
    assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
    assert stat.S_IMODE(os.stat(sup.control.socket_path.parent).st_mode) == 0o700


async def test_add_is_idempotent_and_201_then_200(lb: tuple[Supervisor, ControlClient]) -> None:
    _, c = lb
    first = await c.add_backend("web", "127.0.0.1:9003", 2, metadata={"by": "test"})
    again = await c.add_backend("web", "127.0.0.1:9003", 2)
    assert first.created and not again.created
    assert again.backend.metadata == {"by": "test"} and again.backend.dynamic
    status, _ = await raw(c, "POST", "/v1/pools/web/backends", b'{"address": "127.0.0.1:9003"}')
    assert status == 200
    assert [b.id for b in (await c.backends("web")).backends][-1] == "127.0.0.1:9003"


# fmt: off
BAD_CALLS: list[tuple[str, str, bytes | None, int, str]] = [
    ("POST", "/v1/pools/nope/backends", b'{"address": "127.0.0.1:9"}', 404, "pool"),
    ("POST", "/v1/pools/web/backends", b'{"address": "localhost"}', 422, "address"),
    ("POST", "/v1/pools/web/backends", b'{"address": "127.0.0.1:99999"}', 422, "address"),
    ("POST", "/v1/pools/web/backends", b'{"address": "a b:80"}', 422, "address"),
    ("POST", "/v1/pools/web/backends", b'{"address": "127.0.0.1:9", "weight": -1}', 422, "weight"),
    ("POST", "/v1/pools/web/backends", b'{"address": "127.0.0.1:9", "weight": "3"}', 422, "weight"),
    ("POST", "/v1/pools/web/backends", b'{"address": "127.0.0.1:9", "wieght": 3}', 422, "wieght"),
    ("POST", "/v1/pools/web/backends", b'{"address": "127.0.0.1:9", "id": "a/b"}', 422, "id"),
    (
        "POST",
        "/v1/pools/web/backends",
        b'{"address": "127.0.0.1:9003", "id": "127.0.0.1:9001"}',
        409,
        "id",
    ),
    ("POST", "/v1/pools/web/backends", b"{", 400, "body"),
    ("POST", "/v1/pools/web/backends", b"[1]", 422, "body"),
    ("POST", "/v1/pools/web/backends", b"", 422, "address"),
    ("PATCH", "/v1/pools/web/backends/127.0.0.1:9001", b'{"weight": 1001}', 422, "weight"),
    ("PATCH", "/v1/pools/web/backends/127.0.0.1:9001", b'{"admin": "off"}', 422, "admin"),
    ("PATCH", "/v1/pools/web/backends/127.0.0.1:9001", b'{"weight": 2, "x": 1}', 422, "x"),
    ("PATCH", "/v1/pools/web/backends/127.0.0.1:9001", b"{}", 422, "body"),
    ("PATCH", "/v1/pools/web/backends/nobody", b'{"weight": 2}', 404, "backend"),
    ("PATCH", "/v1/pools/nope/backends/127.0.0.1:9001", b'{"weight": 2}', 404, "pool"),
    ("DELETE", "/v1/pools/web/backends/127.0.0.1:9001", None, 409, "backend"),
    ("DELETE", "/v1/pools/web/backends/nobody", None, 404, "backend"),
    ("DELETE", "/v1/pools/web/backends/127.0.0.1:9001?force=maybe", None, 422, "force"),
    ("DELETE", "/v1/pools/web/backends/127.0.0.1:9001?forse=true", None, 422, "forse"),
    ("GET", "/v1/pools/web/backends/127.0.0.1:9001/wait", None, 409, "admin"),
    ("GET", "/v1/pools/web/backends/127.0.0.1:9001/wait?timeout=-1", None, 422, "timeout"),
    ("GET", "/v1/stats?window=0", None, 422, "window"),
    ("GET", "/v1/pools/nope/stats", None, 404, "pool"),
    ("GET", "/v1/nothing", None, 404, "path"),
    ("PUT", "/v1/pools", None, 405, "method"),
    ("POST", "/v1/reload", b'{"now": true}', 422, "now"),
    # A key given twice in a JSON object: refused, not "the last one wins" (issue 14).
    ("PATCH", "/v1/pools/web/backends/127.0.0.1:9001", b'{"weight": 5, "weight": 2}', 400,
     "weight"),
    (
        "POST",
        "/v1/pools/web/backends",
        b'{"address": "127.0.0.1:9003", "address": "127.0.0.1:9004"}',
        400,
        "address",
    ),
    (
        "POST",
        "/v1/pools/web/backends",
        b'{"address": "127.0.0.1:9003", "metadata": {"a": "1", "a": "2"}}',
        400,
        "metadata.a",
    ),
    ("POST", "/v1/reload", b'{"x": 1, "x": 1}', 400, "x"),
    # A query parameter given twice: refused, not "the first one wins" (issue 14).
    ("DELETE", "/v1/pools/web/backends/127.0.0.1:9001?force=1&force=0", None, 400, "force"),
    ("DELETE", "/v1/pools/web/backends/127.0.0.1:9001?force=0&force=0", None, 400, "force"),
    ("GET", "/v1/pools/web/backends/127.0.0.1:9001/wait?timeout=1&timeout=2", None, 400, "timeout"),
    ("GET", "/v1/stats?window=5&window=5", None, 400, "window"),
    ("GET", "/v1/info?x=1&x=2", None, 400, "x"),
]

# A body that is not declared as JSON (issue 14: a text/plain body was accepted).
ADD = b'{"address": "127.0.0.1:9003"}'
BAD_CONTENT_TYPES: list[tuple[str, str, bytes, str | None]] = [
    ("POST", "/v1/pools/web/backends", ADD, "text/plain"),
    ("POST", "/v1/pools/web/backends", ADD, None),
    ("POST", "/v1/pools/web/backends", ADD, "application/x-www-form-urlencoded"),
    ("POST", "/v1/pools/web/backends", ADD, "application/json; charset=latin-1"),
    ("POST", "/v1/pools/web/backends", ADD, "application/jsonx"),
    ("PATCH", "/v1/pools/web/backends/127.0.0.1:9001", b'{"weight": 7}', "text/plain"),
    ("POST", "/v1/reload", b"{}", "text/plain"),
    (
        "POST",
        "/v1/pools/web/events",
        b'{"events": [{"time": 1, "kind": "decision", "message": "m"}]}',
        "text/plain",
    ),
]
# fmt: on


async def refused_and_unchanged(
    lb: tuple[Supervisor, ControlClient],
    method: str,
    path: str,
    body: bytes | None,
    status: int,
    field: str,
    content_type: str | None = "application/json",
) -> str:
    """The call is a JSON 4xx naming ``field``; neither the pools nor the state file moved.
    Returns the error message."""
    sup, c = lb
    before = await listing(c)
    events_before = sup.control.events.seq
    await sup.control.persisted()
    state_before = sup.control.state_path.read_bytes()
    got, doc = await raw(c, method, path, body, content_type)
    assert (got, doc["error"]["status"], doc["error"]["field"]) == (status, status, field), doc
    assert doc["error"]["message"]
    assert await listing(c) == before
    assert sup.control.events.seq == events_before
    await sup.control.persisted()
    assert sup.control.state_path.read_bytes() == state_before
    return str(doc["error"]["message"])


@pytest.mark.parametrize(("method", "path", "body", "status", "field"), BAD_CALLS)
async def test_bad_call_is_a_json_4xx_naming_the_field_and_changes_nothing(
    lb: tuple[Supervisor, ControlClient],
    method: str,
    path: str,
    body: bytes | None,
    status: int,
    field: str,
) -> None:
    await refused_and_unchanged(lb, method, path, body, status, field)


@pytest.mark.parametrize(("method", "path", "body", "content_type"), BAD_CONTENT_TYPES)
async def test_a_body_that_is_not_declared_json_is_415(
    lb: tuple[Supervisor, ControlClient],
    method: str,
    path: str,
    body: bytes,
    content_type: str | None,
) -> None:
    msg = await refused_and_unchanged(lb, method, path, body, 415, "Content-Type", content_type)
    assert "application/json" in msg
    if content_type is not None:
        assert content_type.split(";")[0] in msg


@pytest.mark.parametrize(
    "content_type",
    ["application/json", "application/json; charset=utf-8", "Application/JSON;charset=UTF-8"],
)
async def test_json_with_or_without_utf8_charset_is_accepted(
    lb: tuple[Supervisor, ControlClient], content_type: str
) -> None:
    _, c = lb
    status, doc = await raw(
        c, "POST", "/v1/pools/web/backends", b'{"address": "127.0.0.1:9003"}', content_type
    )
    assert status == 201, doc


async def test_a_call_without_a_body_needs_no_content_type(
    lb: tuple[Supervisor, ControlClient],
) -> None:
    _, c = lb
    # curl -X POST .../v1/reload sends neither a body nor a Content-Type.
    status, doc = await raw(c, "POST", "/v1/reload", None, None)
    assert status == 200, doc


async def test_client_raises_api_error(lb: tuple[Supervisor, ControlClient]) -> None:
    _, c = lb
    with pytest.raises(ApiError) as ei:
        await c.set_weight("web", "127.0.0.1:9001", -5)
    assert (ei.value.status, ei.value.field) == (422, "weight")


async def test_drain_wait_delete_without_workers(lb: tuple[Supervisor, ControlClient]) -> None:
    _, c = lb
    b = await c.update_backend("web", "127.0.0.1:9002", weight=3, admin="drain")
    assert (b.weight, b.admin, b.removable) == (3, "drain", True)
    w = await c.wait_removable("web", "127.0.0.1:9002", 1)
    assert w.removable and not w.timed_out and w.workers == 0
    removed = await c.remove("web", "127.0.0.1:9002")
    assert removed.removed.id == "127.0.0.1:9002" and not removed.forced
    assert [b.id for b in (await c.backends("web")).backends] == ["127.0.0.1:9001"]


async def test_force_delete_of_a_ready_backend(lb: tuple[Supervisor, ControlClient]) -> None:
    sup, c = lb
    sent: list[ToWorker] = []
    sup.plane.broadcast = sent.append  # type: ignore[method-assign]
    removed = await c.remove("web", "127.0.0.1:9001", force=True)
    assert removed.forced
    kinds = [m.TYPE for m in sent]
    assert kinds.index("close_backend") < kinds.index("remove")


async def test_runtime_changes_are_on_disk_when_answered(tmp_path: Path) -> None:
    path = tmp_path / "lb.toml"
    write_config(path)
    sup = await start(path)
    async with ControlClient(sup.control.socket_path) as c:
        await c.add_backend("web", "127.0.0.1:9003", 4, id="n3")
        await c.maint("web", "127.0.0.1:9001")
    # No clean shutdown: what a SIGKILL leaves behind must already hold every change.
    saved = (tmp_path / "run" / "state.json").read_text()
    assert '"n3"' in saved and '"maint"' in saved
    assert sup.control.server is not None
    await sup.control.server.stop()
    again = await start(path)
    try:
        async with ControlClient(again.control.socket_path) as c:
            by_id = {b.id: b for b in (await c.backends("web")).backends}
        assert by_id["n3"].weight == 4 and by_id["n3"].dynamic
        assert by_id["127.0.0.1:9001"].admin == "maint"
    finally:
        await again.control.close()


async def test_reload_refuses_a_bad_file_and_applies_a_good_one(
    lb: tuple[Supervisor, ControlClient], tmp_path: Path
) -> None:
    sup, c = lb
    await c.add_backend("web", "127.0.0.1:9003")
    path = tmp_path / "lb.toml"
    good = path.read_text()
    path.write_text(good.replace('strategy = "round_robin"', 'strategy = "no_such"'))
    before = await listing(c)
    with pytest.raises(ApiError) as ei:
        await c.reload()
    assert ei.value.status == 422 and ei.value.field == "config"
    assert "pools.web.strategy" in ei.value.message
    assert await listing(c) == before and sup.config.pools["web"].strategy == "round_robin"

    path.write_text(
        good.replace(
            'strategy = "round_robin"', 'strategy = "least_conn"\ndrain_timeout = "5s"'
        ).replace('[[pools.web.backends]]\naddress = "127.0.0.1:9002"\n', "")
    )
    r = await c.reload()
    assert "backend web/127.0.0.1:9002 removed" in r.changes
    assert "pool web strategy: 'round_robin' -> 'least_conn'" in r.changes
    ids = [b.id for b in (await c.backends("web")).backends]
    assert ids == ["127.0.0.1:9001", "127.0.0.1:9003"]  # the runtime-added one survived
    assert (await c.pool("web")).drain_timeout == 5.0


async def test_reload_refuses_a_listener_that_cannot_bind(
    lb: tuple[Supervisor, ControlClient], tmp_path: Path
) -> None:
    sup, c = lb
    path = tmp_path / "lb.toml"
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        text = path.read_text()
        path.write_text(
            text + f'\n[[listeners]]\nname = "x"\nbind = "127.0.0.1:{port}"\npool = "web"\n'
        )
        with pytest.raises(ApiError) as ei:
            await c.reload()
    assert ei.value.field == "listeners[1].bind"
    assert [lc.name for lc in sup.config.listeners] == ["l"]


async def test_live_socket_refuses_a_second_lb_and_stale_one_is_replaced(
    lb: tuple[Supervisor, ControlClient], tmp_path: Path
) -> None:
    _, c = lb
    path = tmp_path / "lb.toml"
    with pytest.raises(StartupError, match="another lb is serving the control socket"):
        await Supervisor(load_config(path), str(path), "text", "info").start()
    assert (await c.info()).pid == os.getpid()  # the first one still answers

    other = tmp_path / "other.toml"
    write_config(other)
    text = other.read_text().replace("[lb]\n", '[lb]\ncontrol_socket = "stale.sock"\n')
    other.write_text(text)
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(tmp_path / "stale.sock"))
    stale.close()  # a socket file nobody accepts on: what a crash leaves
    sup2 = await start(other)
    try:
        async with ControlClient(tmp_path / "stale.sock") as c2:
            assert (await c2.info()).control_socket == str(tmp_path / "stale.sock")
    finally:
        await sup2.control.close()
    assert not (tmp_path / "stale.sock").exists()  # removed at a clean stop


async def test_client_explains_unreachable_sockets(tmp_path: Path) -> None:
    async with ControlClient(tmp_path / "none.sock") as c:
        with pytest.raises(Unreachable, match="no control socket at"):
            await c.info()
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(tmp_path / "dead.sock"))
    s.close()
    async with ControlClient(tmp_path / "dead.sock") as c:
        with pytest.raises(Unreachable, match="lb is not running"):
            await c.info()


def test_openapi_covers_every_route_and_error_shape() -> None:
    doc = build(auth=True)
    ops = {(m.upper(), p) for p, item in doc["paths"].items() for m in item}
    assert ("POST", "/v1/pools/{pool}/backends") in ops
    assert ("DELETE", "/v1/pools/{pool}/backends/{backend}") in ops
    assert ("GET", "/v1/pools/{pool}/backends/{backend}/wait") in ops
    add = doc["paths"]["/v1/pools/{pool}/backends"]["post"]
    assert set(add["responses"]) >= {"200", "201", "404", "409", "422", "401", "default"}
    schema = doc["components"]["schemas"]["AddBackend"]
    assert schema["additionalProperties"] is False
    assert schema["properties"]["weight"]["minimum"] == 0
    assert add["security"] == [{"bearer": []}]
    assert "security" not in doc["paths"]["/v1/pools"]["get"]
    # Issue 14: a body not declared JSON is 415; a repeated key or query parameter is 400.
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if path == "/v1/openapi.json":
                continue
            has_body = "requestBody" in op
            assert ("415" in op["responses"]) == has_body, (method, path)
            assert "Content-Type" in op["responses"]["415"]["description"] if has_body else True
            assert (
                "query parameter is given more than once" in op["responses"]["400"]["description"]
            ), (method, path)
            if has_body:
                assert "repeats a key" in op["responses"]["400"]["description"], (method, path)
    delete = doc["paths"]["/v1/pools/{pool}/backends/{backend}"]["delete"]
    assert set(delete["responses"]) >= {"400", "404", "409", "422"}
    assert "415" in doc["paths"]["/v1/reload"]["post"]["responses"]


# -- issue 14: failures that showed only in the log ---------------------------------------------


async def test_info_shows_a_state_file_that_was_moved_aside(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "lb.toml"
    write_config(path)
    state = tmp_path / "run" / "state.json"
    state.parent.mkdir()
    state.write_bytes(b"{not json")
    t0 = time.time()
    sup = await start(path)
    try:
        async with ControlClient(sup.control.socket_path) as c:
            info = await c.info()
            gone = info.state_file_discarded
            assert gone is not None, info
            assert "not a valid state file" in gone.error and str(state) in gone.error
            moved = Path(gone.moved_to)
            assert moved.parent == state.parent and moved.name.startswith("state.json.bad-")
            assert await asyncio.to_thread(moved.read_bytes) == b"{not json"
            assert t0 - 1 <= gone.at <= time.time() + 1
            assert info.state_file_error is None  # the new file was written fine
        code = await asyncio.to_thread(
            lbctl.main, ["--socket", str(sup.control.socket_path), "info"]
        )
        out = capsys.readouterr().out
        assert code == 0
        (line,) = [ln for ln in out.splitlines() if ln.startswith("state_file_discarded:")]
        assert line.startswith(f"state_file_discarded: moved to {moved} at "), out
        assert f"\n  {gone.error.splitlines()[0]}\n" in out, out
        assert "state_file_error: -" in out
    finally:
        await sup.control.close()


async def test_a_state_file_that_cannot_be_moved_aside_stops_the_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "lb.toml"
    write_config(path)
    state = tmp_path / "run" / "state.json"
    state.parent.mkdir()
    state.write_bytes(b"{not json")

    def refuse(path: Path, at: float | None = None) -> Path:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(persist, "set_aside", refuse)
    sup = Supervisor(load_config(path), str(path), "text", "info")
    try:
        with pytest.raises(ControlStartupError) as ei:
            await sup.control.prepare()
    finally:
        await sup.control.close()
    msg = str(ei.value)
    assert str(state) in msg and "cannot be moved aside (Permission denied)" in msg, msg
    assert state.read_bytes() == b"{not json"  # not overwritten by the config alone


async def test_info_without_a_discarded_state_file_says_so(
    lb: tuple[Supervisor, ControlClient],
) -> None:
    _, c = lb
    info = await c.info()
    assert info.state_file_discarded is None and info.state_file_error is None


async def admin_write(port: int, token: str) -> int:
    async with (
        aiohttp.ClientSession() as s,
        s.post(
            f"http://127.0.0.1:{port}/v1/pools/web/events",
            json={"events": [{"time": 1, "kind": "decision", "message": "m"}]},
            headers={"Authorization": f"Bearer {token}"},
        ) as r,
    ):
        return r.status


@pytest.mark.parametrize("problem", ["empty", "missing"])
async def test_reload_with_a_bad_token_file_is_refused_whole(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], problem: str
) -> None:
    path = tmp_path / "lb.toml"
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    port = free_port()
    write_config(path, admin={"bind": f"127.0.0.1:{port}", "token_file": "token"})
    sup = await start(path)
    try:
        assert await admin_write(port, "s3cret") == 201
        # The reload would change the strategy too: nothing of it may apply.
        good = path.read_text()
        path.write_text(good.replace('"round_robin"', '"least_conn"'))
        if problem == "empty":
            token.write_text("  \n")
        else:
            token.unlink()
        async with ControlClient(sup.control.socket_path) as c:
            before = await listing(c)
            with pytest.raises(ApiError) as ei:
                await c.reload()
            assert (ei.value.status, ei.value.field) == (422, "admin.token_file")
            assert str(token) in ei.value.message
            assert ("empty" if problem == "empty" else "cannot read") in ei.value.message
            assert await listing(c) == before
        assert sup.config.pools["web"].strategy == "round_robin"
        assert await admin_write(port, "s3cret") == 201  # the old token still works

        code = await asyncio.to_thread(
            lbctl.main, ["--socket", str(sup.control.socket_path), "reload"]
        )
        err = capsys.readouterr().err
        assert code == lbctl.EXIT_REFUSED
        assert "refused (HTTP 422): admin.token_file:" in err and str(token) in err, err

        token.write_text("n3w\n")  # fixed: the reload applies, with the new token
        async with ControlClient(sup.control.socket_path) as c:
            r = await c.reload()
        assert "pool web strategy: 'round_robin' -> 'least_conn'" in r.changes
        assert await admin_write(port, "s3cret") == 401
        assert await admin_write(port, "n3w") == 201
    finally:
        await sup.control.close()


async def test_reload_that_adds_an_admin_listener_checks_its_token_file(
    lb: tuple[Supervisor, ControlClient], tmp_path: Path
) -> None:
    """The listener starts at the next restart, which an empty token file would stop: the
    reload says so now."""
    sup, c = lb
    path = tmp_path / "lb.toml"
    (tmp_path / "token").write_text("")
    text = path.read_text()
    admin = f'[admin]\nbind = "127.0.0.1:{free_port()}"\ntoken_file = "token"\n\n'
    path.write_text(text.replace("[[listeners]]", admin + "[[listeners]]", 1))
    with pytest.raises(ApiError) as ei:
        await c.reload()
    assert (ei.value.status, ei.value.field) == (422, "admin.token_file")
    assert f"{tmp_path / 'token'} is empty (named in {path})" in ei.value.message
    assert sup.config.admin.bind is None
    (tmp_path / "token").write_text("t0ken")
    r = await c.reload()
    assert r.restart_required == ["admin.bind"]


async def test_reload_names_a_duplicated_backend_not_the_pool(
    lb: tuple[Supervisor, ControlClient], tmp_path: Path
) -> None:
    _, c = lb
    path = tmp_path / "lb.toml"
    path.write_text(path.read_text() + '\n[[pools.web.backends]]\naddress = "127.0.0.1:9001"\n')
    before = await listing(c)
    with pytest.raises(ApiError) as ei:
        await c.reload()
    assert (ei.value.status, ei.value.field) == (422, "config")
    assert "pools.web.backends[2].address: '127.0.0.1:9001' is invalid" in ei.value.message
    assert "listed twice" in ei.value.message
    assert "{" not in ei.value.message and "9002" not in ei.value.message, ei.value.message
    assert await listing(c) == before

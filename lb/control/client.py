"""An async client of the control API, over the unix socket (or the admin TCP listener).

Used by ``lbctl`` and the scaler. Every operation is a typed method that returns the response
model the server declares (``lb/control/models.py``). A refusal raises ``ApiError`` with the
server's status, field and message; a socket that cannot be reached raises ``Unreachable``
with an explanation an operator can act on.

    async with ControlClient("run/lb.sock") as lb:
        await lb.add_backend("web", "127.0.0.1:9004", weight=2)
        await lb.drain("web", "127.0.0.1:9004")
        if (await lb.wait_removable("web", "127.0.0.1:9004", within=30)).removable:
            await lb.remove("web", "127.0.0.1:9004")
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import quote

import aiohttp
import orjson
from pydantic import BaseModel, ValidationError
from yarl import URL

from lb.control.errors import ApiError
from lb.control.models import (
    AddResult,
    BackendsResponse,
    BackendView,
    Info,
    PoolDemand,
    PoolsResponse,
    PoolView,
    ReloadResult,
    RemoveResult,
    StatsResponse,
    WaitResult,
)
from lb.model import AdminState

__all__ = ["ApiError", "ControlClient", "ControlClientError", "Unreachable"]

T = TypeVar("T", bound=BaseModel)


class ControlClientError(Exception):
    """The answer could not be understood (not the control API?)."""


class Unreachable(ControlClientError):
    """Nothing answers on the socket/address; the message says why and what to check."""


def _seg(value: str) -> str:
    return quote(value, safe="")


class ControlClient:
    def __init__(
        self,
        socket_path: str | os.PathLike[str] | None = None,
        *,
        url: str | None = None,
        token: str | None = None,
        timeout: float = 30.0,
    ) -> None:
        """Give ``socket_path`` (the unix socket) or ``url`` (the admin listener, e.g.
        ``http://127.0.0.1:9900``; write calls there need ``token``)."""
        if (socket_path is None) == (url is None):
            raise ValueError("give exactly one of socket_path and url")
        self.socket_path = Path(socket_path) if socket_path is not None else None
        self.base = (url or "http://lb").rstrip("/")
        self.timeout = timeout
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._session: aiohttp.ClientSession | None = None

    @property
    def target(self) -> str:
        return str(self.socket_path) if self.socket_path is not None else self.base

    async def __aenter__(self) -> ControlClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector: aiohttp.BaseConnector
            if self.socket_path is not None:
                connector = aiohttp.UnixConnector(path=str(self.socket_path))
            else:
                connector = aiohttp.TCPConnector()
            self._session = aiohttp.ClientSession(connector=connector, headers=self._headers)
        return self._session

    # -- transport --------------------------------------------------------------------------------

    async def request(
        self,
        method: str,
        path: str,
        *,
        query: dict[str, str] | None = None,
        body: dict[str, Any] | None = None,
        seconds: float | None = None,
    ) -> tuple[int, Any]:
        """One call; returns (status, parsed JSON). Raises ApiError for a 4xx/5xx answer."""
        session = self._get_session()
        data = orjson.dumps(body) if body is not None else None
        headers = {"Content-Type": "application/json"} if data is not None else None
        try:
            async with session.request(
                method,
                URL(self.base + path, encoded=True),
                params=query,
                data=data,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=seconds or self.timeout),
            ) as resp:
                raw = await resp.read()
                status = resp.status
        except aiohttp.ClientConnectorError as exc:
            raise Unreachable(self._explain(exc.os_error)) from None
        except aiohttp.ClientError as exc:
            raise Unreachable(f"{self.target}: {exc}") from None
        except TimeoutError:
            raise Unreachable(
                f"{self.target}: no answer within {seconds or self.timeout:g}s"
            ) from None
        try:
            doc = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            raise ControlClientError(
                f"{self.target}: HTTP {status} with a body that is not JSON: {raw[:200]!r}"
            ) from None
        if status >= 400:
            err = doc.get("error") if isinstance(doc, dict) else None
            if not isinstance(err, dict):
                raise ControlClientError(f"{self.target}: HTTP {status}: {doc!r}")
            raise ApiError(status, str(err.get("field", "")), str(err.get("message", "")))
        return status, doc

    def _explain(self, exc: OSError) -> str:
        where = self.target
        if self.socket_path is None:
            return f"cannot connect to {where}: {exc.strerror or exc}"
        if isinstance(exc, FileNotFoundError) or exc.errno == errno.ENOENT:
            return (
                f"no control socket at {where}: is lb running with this config? "
                "(the path is [lb] control_socket, relative to config.toml)"
            )
        if isinstance(exc, PermissionError) or exc.errno in (errno.EACCES, errno.EPERM):
            return (
                f"permission denied on {where}: the socket is mode 0600, so run lbctl as "
                "the user that runs lb"
            )
        if isinstance(exc, ConnectionRefusedError) or exc.errno == errno.ECONNREFUSED:
            return f"nothing accepts on {where}: lb is not running (the socket file is stale)"
        return f"cannot connect to {where}: {exc.strerror or exc}"

    async def _model(
        self,
        model: type[T],
        method: str,
        path: str,
        *,
        query: dict[str, str] | None = None,
        body: dict[str, Any] | None = None,
        seconds: float | None = None,
    ) -> T:
        _, doc = await self.request(method, path, query=query, body=body, seconds=seconds)
        try:
            return model.model_validate(doc)
        except ValidationError as exc:
            raise ControlClientError(f"{self.target}: unexpected answer to {path}: {exc}") from None

    # -- operations -------------------------------------------------------------------------------

    async def info(self) -> Info:
        return await self._model(Info, "GET", "/v1/info")

    async def pools(self) -> PoolsResponse:
        return await self._model(PoolsResponse, "GET", "/v1/pools")

    async def pool(self, pool: str) -> PoolView:
        return await self._model(PoolView, "GET", f"/v1/pools/{_seg(pool)}")

    async def backends(self, pool: str) -> BackendsResponse:
        return await self._model(BackendsResponse, "GET", f"/v1/pools/{_seg(pool)}/backends")

    async def backend(self, pool: str, backend: str) -> BackendView:
        return await self._model(BackendView, "GET", self._bpath(pool, backend))

    async def add_backend(
        self,
        pool: str,
        address: str,
        weight: int = 1,
        *,
        id: str | None = None,
        metadata: dict[str, str] | None = None,
        max_conn: int | None = None,
    ) -> AddResult:
        body: dict[str, Any] = {"address": address, "weight": weight}
        if id is not None:
            body["id"] = id
        if max_conn is not None:
            body["max_conn"] = max_conn
        if metadata:
            body["metadata"] = metadata
        return await self._model(AddResult, "POST", f"/v1/pools/{_seg(pool)}/backends", body=body)

    async def update_backend(
        self,
        pool: str,
        backend: str,
        *,
        weight: int | None = None,
        admin: AdminState | str | None = None,
        max_conn: int | None = None,
    ) -> BackendView:
        body: dict[str, Any] = {}
        if weight is not None:
            body["weight"] = weight
        if max_conn is not None:
            body["max_conn"] = max_conn
        if admin is not None:
            body["admin"] = str(admin)
        return await self._model(BackendView, "PATCH", self._bpath(pool, backend), body=body)

    async def set_weight(self, pool: str, backend: str, weight: int) -> BackendView:
        return await self.update_backend(pool, backend, weight=weight)

    async def set_admin(self, pool: str, backend: str, admin: AdminState | str) -> BackendView:
        return await self.update_backend(pool, backend, admin=admin)

    async def drain(self, pool: str, backend: str) -> BackendView:
        return await self.set_admin(pool, backend, AdminState.DRAIN)

    async def ready(self, pool: str, backend: str) -> BackendView:
        return await self.set_admin(pool, backend, AdminState.READY)

    async def maint(self, pool: str, backend: str) -> BackendView:
        return await self.set_admin(pool, backend, AdminState.MAINT)

    async def wait_removable(self, pool: str, backend: str, within: float = 30.0) -> WaitResult:
        """Wait (server side) until the draining backend is removable, or ``within`` seconds
        pass; check ``removable`` in the answer."""
        return await self._model(
            WaitResult,
            "GET",
            self._bpath(pool, backend) + "/wait",
            query={"timeout": repr(float(within))},
            seconds=within + 10,
        )

    async def remove(self, pool: str, backend: str, *, force: bool = False) -> RemoveResult:
        return await self._model(
            RemoveResult,
            "DELETE",
            self._bpath(pool, backend),
            query={"force": "true" if force else "false"},
        )

    async def stats(self, pool: str | None = None, *, window: float = 10.0) -> StatsResponse:
        path = "/v1/stats" if pool is None else f"/v1/pools/{_seg(pool)}/stats"
        return await self._model(StatsResponse, "GET", path, query={"window": repr(float(window))})

    async def demand(self, pool: str, after: int | None = None, within: float = 25.0) -> PoolDemand:
        """The pool's demand (in flight + queued + held). With ``after`` (the ``seq`` of an
        earlier answer), lb answers when the figures change, or after ``within`` seconds."""
        query = {"timeout": repr(float(within))}
        if after is not None:
            query["after"] = str(after)
        return await self._model(
            PoolDemand,
            "GET",
            f"/v1/pools/{_seg(pool)}/demand",
            query=query,
            seconds=within + 10,
        )

    async def reload(self) -> ReloadResult:
        return await self._model(ReloadResult, "POST", "/v1/reload", body={})

    async def openapi(self) -> dict[str, Any]:
        _, doc = await self.request("GET", "/v1/openapi.json")
        if not isinstance(doc, dict):
            raise ControlClientError(f"{self.target}: the OpenAPI description is not an object")
        return doc

    @staticmethod
    def _bpath(pool: str, backend: str) -> str:
        return f"/v1/pools/{_seg(pool)}/backends/{_seg(backend)}"

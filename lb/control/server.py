"""The control API's HTTP side: aiohttp apps on the unix socket and the optional admin listener.

The unix socket (``[lb] control_socket``, mode 0600, in a folder created 0700) is the full
API: whoever can open it is trusted, as with HAProxy's stats socket. A socket file left by a
crash is detected at startup (nothing accepts on it: it is removed); one that a live ``lb``
serves makes startup fail with a clear message instead of stealing it.

The admin listener (``[admin] bind``, off by default) serves the same routes over TCP, but any
call other than GET needs ``Authorization: Bearer <token>`` with the token read from
``[admin] token_file``; without a token file, writes there are refused. Other components add
their own admin routes (``/metrics``, the dashboard) with ``add_admin_route`` before
``start()``.

Every answer is JSON; every refusal is ``{"error": {"status", "field", "message"}}``.
"""

from __future__ import annotations

import contextlib
import errno
import hmac
import json
import logging
import os
import socket
import stat
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
from aiohttp import hdrs, web
from aiohttp.http_exceptions import HttpProcessingError
from pydantic import ValidationError

from lb.config import AdminConfig, Config, loc_to_path
from lb.control import openapi
from lb.control.api import ROUTES, Call, ControlApi, Route
from lb.control.errors import ApiError, ControlStartupError, from_validation
from lb.control.plane import resolve_path
from lb.model import IllegalTransition, parse_address
from lb.state import StateError

log = logging.getLogger("lb.control")

MAX_BODY = 64 * 1024
SHUTDOWN_TIMEOUT = 2.0
_READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

WebHandler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class _QuietBadRequests(logging.Filter):
    """aiohttp answers a malformed request (400) and logs it with a traceback; a client
    sending garbage is not an error of lb's, so it becomes one debug line."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            log.debug("control API: bad request: %s", exc)
            return False
        return True


_quiet = _QuietBadRequests()


def json_response(status: int, doc: Any, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status,
        body=orjson.dumps(doc, option=orjson.OPT_APPEND_NEWLINE),
        content_type="application/json",
        headers=headers,
    )


def error_response(
    status: int, field: str, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    return json_response(
        status, {"error": {"status": status, "field": field, "message": message}}, headers
    )


@web.middleware
async def _errors(request: web.Request, handler: WebHandler) -> web.StreamResponse:
    try:
        return await handler(request)
    except (ApiError, StateError) as exc:
        headers = {"WWW-Authenticate": 'Bearer realm="lb"'} if exc.status == 401 else None
        return error_response(exc.status, exc.field, exc.message, headers)
    except IllegalTransition as exc:
        return error_response(409, "admin", str(exc))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        if exc.status == 404:
            return error_response(404, "path", f"no such path: {request.method} {request.path}")
        if exc.status == 405:
            allow = exc.headers.get("Allow", "")
            return error_response(
                405,
                "method",
                f"{request.method} is not allowed here; allowed: {allow}",
                {"Allow": allow},
            )
        if exc.status == 413:
            return error_response(413, "body", f"the body is larger than {MAX_BODY} bytes")
        return error_response(exc.status, "request", exc.reason)
    except Exception:
        log.exception("control API: %s %s failed", request.method, request.path)
        return error_response(500, "", "internal error (logged by lb)")


# -- strict request parsing: what a call means is never a guess -----------------------------------


def query_params(request: web.Request) -> dict[str, str]:
    """The query parameters, each given once: ``?force=1&force=0`` is refused (400 naming it)
    instead of one of the values silently winning."""
    params: dict[str, str] = {}
    for key, value in request.query.items():
        if key in params:
            n = len(request.query.getall(key))
            raise ApiError(400, key, f"query parameter {key!r} is given {n} times; give it once")
        params[key] = value
    return params


def check_json_type(request: web.Request) -> None:
    """A body must be declared JSON: ``Content-Type: application/json``, with no charset or
    ``charset=utf-8`` (415 naming ``Content-Type`` otherwise)."""
    given = request.headers.get(hdrs.CONTENT_TYPE)
    if given is None:
        raise ApiError(
            415, "Content-Type", "a body needs the header 'Content-Type: application/json'"
        )
    charset = request.charset
    if request.content_type != "application/json" or (
        charset is not None and charset.lower() not in ("utf-8", "utf8")
    ):
        raise ApiError(
            415,
            "Content-Type",
            f"the body must be JSON sent as 'Content-Type: application/json' (charset utf-8, "
            f"if any), not {given!r}",
        )


class _Members(list[tuple[str, Any]]):
    """A JSON object as the list of its members, in order, duplicates kept."""


def duplicate_key(raw: bytes) -> str | None:
    """The path of the first key given twice in one object of the JSON document ``raw``
    (``metadata.a``), or None. orjson keeps the last value of a repeated key without a word,
    so the members are read once more with the standard parser, which can show them all.
    Raises ValueError (RecursionError) for what that parser cannot read."""
    if b"," not in raw:
        return None  # no object with two members: the common one-field PATCH
    doc = json.loads(raw, object_pairs_hook=_Members)
    # Depth first in document order, without recursion: one frame per open object (with the
    # keys seen so far) or array (None).
    Loc = tuple[int | str, ...]
    stack: list[tuple[Loc, Iterator[tuple[Any, Any]], set[str] | None]] = []

    def enter(loc: Loc, node: Any) -> None:
        if isinstance(node, _Members):
            stack.append((loc, iter(node), set()))
        elif isinstance(node, list):
            stack.append((loc, iter(enumerate(node)), None))

    enter((), doc)
    while stack:
        loc, members, seen = stack[-1]
        member = next(members, None)
        if member is None:
            stack.pop()
            continue
        key, value = member
        if seen is not None:
            if key in seen:
                return loc_to_path((*loc, key))
            seen.add(key)
        enter((*loc, key), value)
    return None


def parse_json_body(request: web.Request, raw: bytes) -> Any:
    """The body of a call that takes one: empty means ``{}``; anything else must be declared
    JSON (415), be JSON (400), and give each key of an object once (400 naming the key)."""
    if not raw:
        return {}
    check_json_type(request)
    if not raw.strip():
        return {}
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, "body", f"the body is not valid JSON: {exc}") from None
    try:
        repeated = duplicate_key(raw)
    except RecursionError:
        raise ApiError(400, "body", "the body is nested too deeply") from None
    except ValueError as exc:
        raise ApiError(400, "body", f"the body is not valid JSON: {exc}") from None
    if repeated is not None:
        raise ApiError(400, repeated, f"key {repeated!r} is repeated in the body; give it once")
    return data


def _endpoint(api: ControlApi, route: Route) -> WebHandler:
    query_fields = list(route.query.model_fields)
    body_fields = list(route.body.model_fields) if route.body is not None else []

    async def handle(request: web.Request) -> web.StreamResponse:
        try:
            query = route.query.model_validate(query_params(request))
        except ValidationError as exc:
            raise from_validation(exc, "query", query_fields) from None
        body = None
        if route.body is not None:
            data = parse_json_body(request, await request.read())
            if not isinstance(data, dict):
                raise ApiError(422, "body", "the body must be a JSON object")
            try:
                body = route.body.model_validate(data)
            except ValidationError as exc:
                raise from_validation(exc, "body", body_fields) from None
        status, result = await route.handler(api, Call(dict(request.match_info), query, body))
        return json_response(status, result.model_dump(mode="json"))

    handle.__name__ = route.operation_id
    return handle


def make_app(
    api: ControlApi,
    *,
    auth: Callable[[web.Request], None] | None = None,
    extra: list[tuple[str, str, WebHandler]] | None = None,
) -> web.Application:
    """The API as an aiohttp app. ``auth`` (admin listener) is called for every write call."""
    middlewares: list[Any] = [_errors]
    if auth is not None:

        @web.middleware
        async def _auth(request: web.Request, handler: WebHandler) -> web.StreamResponse:
            if request.method not in _READ_METHODS:
                auth(request)
            return await handler(request)

        middlewares.append(_auth)
    app = web.Application(client_max_size=MAX_BODY, middlewares=middlewares)
    for route in ROUTES:
        app.router.add_route(route.method, route.path, _endpoint(api, route))
    doc = orjson.dumps(openapi.build(auth=auth is not None))

    async def openapi_json(request: web.Request) -> web.StreamResponse:
        return web.Response(body=doc, content_type="application/json")

    app.router.add_route("GET", "/v1/openapi.json", openapi_json)
    for method, path, handler in extra or ():
        app.router.add_route(method, path, handler)
    return app


class TokenFileError(Exception):
    """``[admin] token_file`` cannot be used: ``problem`` names the file and what is wrong
    with it, ``str()`` the field too."""

    def __init__(self, problem: str) -> None:
        super().__init__(f"admin.token_file: {problem}")
        self.problem = problem


def read_token(config_path: Path, admin: AdminConfig) -> bytes | None:
    """The bearer token of ``admin`` (None without a token file). Raises TokenFileError."""
    if admin.token_file is None:
        return None
    path = resolve_path(config_path, admin.token_file)
    try:
        token = path.read_bytes().strip()
    except OSError as exc:
        raise TokenFileError(f"cannot read {path}: {exc.strerror or exc}") from None
    if not token:
        raise TokenFileError(f"{path} is empty")
    return token


class ControlServer:
    def __init__(self, api: ControlApi, socket_path: Path, config: Config) -> None:
        self.api = api
        self.socket_path = socket_path
        self.config_path = api.plane.config_path
        self.admin = config.admin
        self._sock: socket.socket | None = None
        self._owned: tuple[int, int] | None = None  # (dev, inode) of the socket file we made
        self._admin_sock: socket.socket | None = None
        self._token: bytes | None = None
        self._pending: tuple[str | None, bytes | None] | None = None  # from check_config
        self._runners: list[web.AppRunner] = []
        self._admin_routes: list[tuple[str, str, WebHandler]] = []

    # -- setup ----------------------------------------------------------------------------------

    def add_admin_route(self, method: str, path: str, handler: WebHandler) -> None:
        """Serve ``handler`` on the admin listener too (``/metrics``, the dashboard). GETs are
        public there; other methods need the bearer token. Call before ``start()``."""
        self._admin_routes.append((method, path, handler))

    def claim(self) -> None:
        """Bind the control socket (and the admin listener). Raises ControlStartupError."""
        path = self.socket_path
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise ControlStartupError(
                f"cannot create the folder of control_socket {path}: {exc.strerror}"
            ) from None
        self._clear_stale(path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_mask = os.umask(0o177)  # the file is created 0600: no window where others connect
        try:
            sock.bind(str(path))
            os.chmod(path, 0o600)
            sock.listen(128)
            sock.setblocking(False)
        except (OSError, ValueError) as exc:
            sock.close()
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            hint = " (unix socket paths are limited to 107 bytes)" if "too long" in why else ""
            raise ControlStartupError(
                f"cannot bind the control socket {path}: {why}{hint}"
            ) from None
        finally:
            os.umask(old_mask)
        st = os.stat(path)
        self._sock = sock
        self._owned = (st.st_dev, st.st_ino)
        if self.admin.bind is not None:
            try:
                self._token = read_token(self.config_path, self.admin)
            except TokenFileError as exc:
                raise ControlStartupError(str(exc)) from None
            self._admin_sock = self._bind_admin(self.admin.bind)

    @staticmethod
    def _clear_stale(path: Path) -> None:
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(st.st_mode):
            raise ControlStartupError(
                f"control_socket {path} exists and is not a socket; remove it or choose "
                "another path in [lb] control_socket"
            )
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.settimeout(1.0)
        try:
            probe.connect(str(path))
        except (ConnectionRefusedError, FileNotFoundError):
            log.warning("removing stale control socket %s (left by a crashed lb)", path)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            return
        except OSError as exc:
            raise ControlStartupError(
                f"cannot check the control socket {path}: {exc.strerror or exc}"
            ) from None
        finally:
            probe.close()
        raise ControlStartupError(
            f"another lb is serving the control socket {path}; stop it first, or give this "
            "one another [lb] control_socket"
        )

    @staticmethod
    def _bind_admin(address: str) -> socket.socket:
        host, port = parse_address(address)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            sock.listen(128)
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            raise ControlStartupError(
                f"admin.bind: cannot bind {address}: {exc.strerror or exc}"
            ) from None
        return sock

    def _check_token(self, request: web.Request) -> None:
        if self._token is None:
            raise ApiError(
                403,
                "authorization",
                "write calls are disabled on the admin listener: set [admin] token_file "
                "(or use the control socket)",
            )
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            given.strip().encode(), self._token
        ):
            raise ApiError(
                401,
                "authorization",
                "write calls need the header 'Authorization: Bearer <token from token_file>'",
            )

    def check_config(self, config: Config) -> None:
        """Before a reload changes anything: the new config's token file must be usable, or
        the reload is refused whole (ApiError 422 naming ``admin.token_file`` and the file).
        Checked when the admin listener runs (the token applies now) and when the new config
        sets ``[admin] bind`` (the token applies at the next start, which it would stop).
        The token read here is the one ``reload`` applies."""
        self._pending = None
        if self._admin_sock is None and config.admin.bind is None:
            return
        try:
            token = read_token(self.config_path, config.admin)
        except TokenFileError as exc:
            raise ApiError(
                422,
                "admin.token_file",
                f"{exc.problem} (named in {self.config_path}); the running config and the "
                "admin token are unchanged",
            ) from None
        self._pending = (config.admin.token_file, token)

    def reload(self, config: Config) -> None:
        """A reload applies the token file (token rotation) that ``check_config`` read; a new
        bind needs a restart."""
        pending, self._pending = self._pending, None
        if self._admin_sock is None:
            return
        self.admin = self.admin.model_copy(update={"token_file": config.admin.token_file})
        if pending is not None and pending[0] == config.admin.token_file:
            self._token = pending[1]
            return
        try:  # a config applied without check_config (not a reload): read it now
            self._token = read_token(self.config_path, config.admin)
        except TokenFileError as exc:
            log.error("keeping the previous admin token: %s", exc)

    # -- run ------------------------------------------------------------------------------------

    async def start(self) -> None:
        assert self._sock is not None, "claim() first"
        server_log = logging.getLogger("aiohttp.server")
        if _quiet not in server_log.filters:
            server_log.addFilter(_quiet)
        await self._serve(make_app(self.api), self._sock)
        if self._admin_sock is not None:
            app = make_app(self.api, auth=self._check_token, extra=self._admin_routes)
            await self._serve(app, self._admin_sock)
            log.info("admin listener on http://%s/", self.admin.bind)

    async def _serve(self, app: web.Application, sock: socket.socket) -> None:
        runner = web.AppRunner(
            app, access_log=None, handle_signals=False, shutdown_timeout=SHUTDOWN_TIMEOUT
        )
        await runner.setup()
        self._runners.append(runner)
        await web.SockSite(runner, sock).start()

    async def stop(self) -> None:
        for runner in self._runners:
            await runner.cleanup()
        self._runners.clear()
        for sock in (self._sock, self._admin_sock):
            if sock is not None:
                sock.close()
        self._sock = self._admin_sock = None
        if self._owned is not None:
            # Only remove the file we created: never a socket a newer lb put in its place.
            try:
                st = os.stat(self.socket_path)
                if (st.st_dev, st.st_ino) == self._owned:
                    os.unlink(self.socket_path)
            except OSError as exc:
                if exc.errno != errno.ENOENT:
                    log.warning("cannot remove %s: %s", self.socket_path, exc.strerror)
            self._owned = None

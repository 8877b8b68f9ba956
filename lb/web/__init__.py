"""The live dashboard: static HTML, JavaScript and CSS served by the admin listener.

``/`` is the page and ``/dashboard/<file>`` its script and style sheet. They are package data
(``pyproject.toml``: ``[tool.setuptools.package-data]``), read once when lb starts, and need
nothing from the internet: the chart is drawn on a canvas by ``app.js`` itself. The page
polls the read-only control API on the same listener (``/v1/info``, ``/v1/listeners``,
``/v1/pools``, ``/v1/stats`` and the scaler's decisions), so it sees exactly what ``lbctl``
sees and needs no token.

This module only serves files; it never computes anything the API does not already answer.
"""

from __future__ import annotations

from importlib import resources
from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from lb.control.server import ControlServer

ASSETS = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}

# The page loads its own files and talks to its own origin, nothing else.
HEADERS = {
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    ),
}


def load_assets() -> dict[str, bytes]:
    here = resources.files(__name__)
    return {name: here.joinpath(name).read_bytes() for name in ASSETS}


def install_dashboard(server: ControlServer) -> None:
    """Serve the dashboard on the admin listener (call before the server starts)."""
    files = load_assets()

    def reply(name: str) -> web.Response:
        return web.Response(body=files[name], headers={**HEADERS, "Content-Type": ASSETS[name]})

    async def index(request: web.Request) -> web.StreamResponse:
        return reply("index.html")

    async def asset(request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if name not in files or name == "index.html":
            raise web.HTTPNotFound()
        return reply(name)

    for method in ("GET", "HEAD"):
        server.add_admin_route(method, "/", index)
        server.add_admin_route(method, "/dashboard/{name}", asset)

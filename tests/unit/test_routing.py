"""Routing table: first match wins; exact and *.suffix hosts; path prefixes; default pool."""

from __future__ import annotations

import pytest

from lb.config import RouteConfig
from lb.routing import Router, normalise_host

ROUTES = [
    RouteConfig(host="api.example.com", path_prefix="/v2/", pool="api2"),
    RouteConfig(host="api.example.com", pool="api"),
    RouteConfig(host="*.example.com", pool="sites"),
    RouteConfig(path_prefix="/static/", pool="static"),
]


@pytest.mark.parametrize(
    ("host", "path", "pool"),
    [
        (b"api.example.com", b"/v2/users", "api2"),
        (b"API.example.com:8443", b"/v2/users", "api2"),
        (b"api.example.com", b"/v1/users", "api"),
        (b"www.example.com", b"/", "sites"),
        (b"a.b.example.com", b"/x", "sites"),
        (b"example.com", b"/", "web"),  # *.example.com does not match the bare domain
        (b"other.org", b"/static/app.js", "static"),
        (b"other.org", b"/", "web"),
        (None, b"/static/x", "static"),
    ],
)
def test_first_match_wins(host: bytes | None, path: bytes, pool: str) -> None:
    assert Router(ROUTES, "web").match(host, path) == pool


def test_no_match_and_no_default_is_none() -> None:
    assert Router(ROUTES, None).match(b"other.org", b"/") is None


def test_no_routes_is_default() -> None:
    assert Router([], "web").match(b"x", b"/") == "web"


@pytest.mark.parametrize(
    ("raw", "host"),
    [(b"Ex.COM", b"ex.com"), (b"ex.com:80", b"ex.com"), (b"[::1]:8080", b"[::1]"), (b"", b"")],
)
def test_normalise_host(raw: bytes, host: bytes) -> None:
    assert normalise_host(raw) == host

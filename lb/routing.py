"""Pick a pool for an HTTP request from its host and path. Pure: no I/O.

Routes are tried in config order and the first match wins (as HAProxy's ``use_backend`` lines
are). A route matches when its host matches (exact, or ``*.suffix`` for any subdomain of
``suffix``; no host matches every host) and the path starts with its ``path_prefix``. When no
route matches, the listener's default pool is used; without one the caller answers 404.
"""

from __future__ import annotations

from collections.abc import Sequence

from lb.config import RouteConfig


def normalise_host(host: bytes | None) -> bytes:
    """``Example.COM:8080`` -> ``example.com``; IPv6 literals keep their brackets."""
    if not host:
        return b""
    host = host.lower()
    if host.startswith(b"["):
        end = host.find(b"]")
        return host[: end + 1] if end > 0 else host
    colon = host.rfind(b":")
    return host[:colon] if colon >= 0 else host


class Router:
    __slots__ = ("default", "routes")

    def __init__(self, routes: Sequence[RouteConfig], default: str | None) -> None:
        self.default = default
        # (exact host | None, suffix | None, prefix, pool)
        self.routes: list[tuple[bytes | None, bytes | None, bytes, str]] = []
        for r in routes:
            exact = suffix = None
            if r.host is not None:
                if r.host.startswith("*."):
                    suffix = r.host[1:].encode()  # ".example.com"
                else:
                    exact = r.host.encode()
            self.routes.append((exact, suffix, r.path_prefix.encode(), r.pool))

    def match(self, host: bytes | None, path: bytes) -> str | None:
        if not self.routes:
            return self.default
        h = normalise_host(host)
        for exact, suffix, prefix, pool in self.routes:
            if exact is not None and h != exact:
                continue
            if suffix is not None and not h.endswith(suffix):
                continue
            if path.startswith(prefix):
                return pool
        return self.default

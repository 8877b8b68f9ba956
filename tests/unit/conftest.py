"""Every sans-IO HTTP test runs twice: with the compiled fast path (``lb.http._speedups``, when
it is built) and with the pure-Python parsers alone. Both must give the same answers."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from lb import _compiled
from tests.unit.test_http_helpers import python_only

_HTTP_MODULES = ("test_http_request", "test_http_response", "test_http_rewrite")
_IMPLS = ["compiled", "python"] if _compiled.speedups_loaded() else ["python"]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if metafunc.module.__name__.rsplit(".", 1)[-1] in _HTTP_MODULES:
        metafunc.fixturenames.append("http_impl")
        metafunc.parametrize("http_impl", _IMPLS)


@pytest.fixture(autouse=True)
def _http_impl(request: pytest.FixtureRequest) -> Iterator[None]:
    """Turn the compiled scans off for the ``python`` variant of a test."""
    callspec = getattr(request.node, "callspec", None)
    if callspec is None or callspec.params.get("http_impl") != "python":
        yield
        return
    with python_only():
        yield

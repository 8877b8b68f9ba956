"""Strict request parsing of the control API (lb/control/server.py), without a socket: a
repeated query parameter, a repeated JSON key and a body not declared JSON are refused with
the field named (issue 14), instead of one value silently winning."""

from __future__ import annotations

import pytest
from aiohttp.test_utils import make_mocked_request

from lb.control.errors import ApiError
from lb.control.server import check_json_type, duplicate_key, parse_json_body, query_params


@pytest.mark.parametrize(
    ("raw", "path"),
    [
        (b'{"weight": 1}', None),
        (b'{"weight": 1, "admin": "drain"}', None),
        (b'{"a": {"x": 1}, "b": {"x": 2}}', None),  # the same key in two objects is fine
        (b'[{"a": 1}, {"a": 2}]', None),
        (b'{"weight": 1, "weight": 1}', "weight"),
        (b'{"metadata": {"a": "1", "b": "2", "a": "3"}}', "metadata.a"),
        (b'{"events": [{"k": 1}, {"data": {"x": 1, "x": 2}}]}', "events[1].data.x"),
        (b'{"a": {"b": 1, "b": 2}, "c": 1, "c": 2}', "a.b"),  # the first in document order
        (b'{"a": 1, "\\u0061": 2}', "a"),  # the same key, escaped
    ],
)
def test_duplicate_key_names_its_path(raw: bytes, path: str | None) -> None:
    assert duplicate_key(raw) == path


@pytest.mark.parametrize("depth", [1000, 5000])
def test_a_body_too_deep_for_the_scan_is_400(depth: int) -> None:
    # 1000: orjson reads it (its limit is 1024), the standard parser's recursion does not.
    raw = b'{"a": 1, "b": ' + b'{"c": ' * depth + b"1" + b"}" * depth + b"}"
    request = make_mocked_request("POST", "/", headers={"Content-Type": "application/json"})
    with pytest.raises(ApiError) as ei:
        parse_json_body(request, raw)
    assert (ei.value.status, ei.value.field) == (400, "body")
    assert "deep" in ei.value.message or "depth" in ei.value.message


def test_repeated_query_parameters_are_refused_by_name() -> None:
    ok = make_mocked_request("GET", "/v1/stats?window=5&pool=web")
    assert query_params(ok) == {"window": "5", "pool": "web"}
    with pytest.raises(ApiError) as ei:
        query_params(make_mocked_request("DELETE", "/x?force=1&force=0"))
    assert (ei.value.status, ei.value.field) == (400, "force")
    assert "2 times" in ei.value.message


@pytest.mark.parametrize(
    ("content_type", "accepted"),
    [
        ("application/json", True),
        ("application/json; charset=utf-8", True),
        ("application/json;charset=UTF-8", True),
        ('application/json; charset="utf-8"', True),
        ("text/plain", False),
        ("text/json", False),
        ("application/json; charset=latin-1", False),
        ("application/problem+json", False),
        ("", False),
        (None, False),
    ],
)
def test_a_body_must_be_declared_json(content_type: str | None, accepted: bool) -> None:
    headers = {} if content_type is None else {"Content-Type": content_type}
    request = make_mocked_request("POST", "/", headers=headers)
    if accepted:
        check_json_type(request)
        assert parse_json_body(request, b'{"a": 1}') == {"a": 1}
        return
    for check in (lambda: check_json_type(request), lambda: parse_json_body(request, b"{}")):
        with pytest.raises(ApiError) as ei:
            check()
        assert (ei.value.status, ei.value.field) == (415, "Content-Type")


def test_no_body_needs_no_content_type() -> None:
    assert parse_json_body(make_mocked_request("POST", "/"), b"") == {}

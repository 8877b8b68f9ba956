"""A new connection's request parser is spawned from its listener's template
(``RequestParser.template(limits).spawn(handler)``, ``HttpContext.parser_template``): it must
parse exactly as ``RequestParser(handler, limits)`` does, limits and errors included, and a
reload must give the connections that open after it the new limits."""

from __future__ import annotations

import asyncio

import pytest

from lb.config import parse_config
from lb.http import RequestLimits, RequestParser
from lb.proxy.accesslog import AccessLog
from lb.proxy.context import HttpContext
from tests.unit.test_http_helpers import Event, RequestRecorder, merged

LIMITS = RequestLimits(max_request_line=40, max_header_bytes=120, max_headers=3, max_body_bytes=5)

INPUTS = [
    [b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"],
    [b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", b"GET / HTTP/1.1\r\n\r\n"],
    [b"GET /" + b"x" * 60 + b" HTTP/1.1\r\nHost: a\r\n\r\n"],  # 414
    [b"GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n"],  # 431: too many fields
    [b"GET / HTTP/1.1\r\nHost: a\r\nX: " + b"v" * 200 + b"\r\n\r\n"],  # 431: too large
    [b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 9\r\n\r\n123456789"],  # 413
    [b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc", b"GET / HTTP/1.1\r\n"],
    [b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n9\r\n123456789\r\n"],
    [b"GET / HTTP/1.1\r\nHost: a\r\n", b"\r\n"],
    [b"BAD\r\n\r\n"],
]


def _events(parser_for: object, chunks: list[bytes]) -> list[Event]:
    rec = RequestRecorder()
    parser = parser_for(rec)  # type: ignore[operator]
    rec.parser = parser
    for chunk in chunks:
        parser.feed(chunk)
    parser.feed_eof()
    return merged(rec.events)


@pytest.mark.parametrize("chunks", INPUTS)
def test_a_spawned_parser_parses_as_a_new_one(chunks: list[bytes]) -> None:
    template = RequestParser.template(LIMITS)
    spawned = _events(template.spawn, chunks)
    assert spawned == _events(lambda rec: RequestParser(rec, LIMITS), chunks)
    assert spawned  # (every input gives events)
    # The template is not changed by what its spawn parsed, and parses nothing itself.
    assert template.closed
    assert _events(template.spawn, chunks) == spawned


def test_the_limits_are_enforced_by_a_spawned_parser() -> None:
    template = RequestParser.template(LIMITS)
    assert _events(template.spawn, INPUTS[2])[-1][:2] == ("error", 414)
    assert _events(template.spawn, INPUTS[5])[-1][:2] == ("error", 413)
    wide = RequestParser.template(RequestLimits())
    assert _events(wide.spawn, INPUTS[2])[0][0] == "head"


async def test_a_reload_changes_the_template_that_new_connections_spawn_from() -> None:
    def config(max_request_line: int) -> object:
        return parse_config(
            {
                "listeners": [
                    {
                        "name": "h",
                        "bind": "127.0.0.1:1",
                        "mode": "http",
                        "pool": "p",
                        "max_request_line": max_request_line,
                    }
                ],
                "pools": {"p": {"backends": [{"address": "127.0.0.1:2"}]}},
            }
        ).listeners[0]

    loop = asyncio.get_running_loop()
    ctx = HttpContext(config(64), loop, set(), AccessLog(), {})  # type: ignore[arg-type]
    try:
        long_line = [b"GET /" + b"x" * 100 + b" HTTP/1.1\r\nHost: a\r\n\r\n"]
        before = ctx.parser_template
        assert _events(before.spawn, long_line)[-1][:2] == ("error", 414)
        ctx.reconfigure(config(8192))  # type: ignore[arg-type]
        assert ctx.parser_template is not before
        assert _events(ctx.parser_template.spawn, long_line)[0][0] == "head"
    finally:
        ctx.close()

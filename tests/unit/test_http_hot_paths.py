"""The per-request shortcuts of the keep-alive exchange give what the general code gives.

* ``client_response_out`` (one buffer: the client's response head and a small body) is
  ``client_response_head`` plus the body, with the compiled splice and without it, for every
  kind of response head and client;
* the request scan takes a buffer only when it is exactly one head, and declines a head over
  the request-line or header-section limit (the parser then answers 414/431 as before);
* the parser's fast path (the scan on the whole buffer) frames pipelined and bodied buffers as
  byte-by-byte feeding does;
* ``latency_bucket`` is ``bisect_left`` over the histogram bounds.
"""

from __future__ import annotations

from bisect import bisect_left

import pytest

import lb.http.rewrite
from lb._compiled import speedups_loaded
from lb.histogram import LATENCY_BOUNDS
from lb.http import RequestLimits
from lb.http.rewrite import client_response_head, client_response_out
from lb.proxy.exchange import latency_bucket
from tests.unit.test_http_helpers import (
    parse_requests,
    python_only,
    response_parser,
)

RESPONSES = [
    b"HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Length: 5\r\nConnection: keep-alive\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
    b"HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nKeep-Alive: timeout=5\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nProxy-Connection: x\r\n\r\n",
    b"HTTP/1.1 204 No Content\r\nDate: x\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nconnection:keep-alive \r\nContent-Length: 5\r\nX-A: b\r\n\r\n",
    b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 5\r\n\r\n",
]


def _head(raw: bytes) -> lb.http.ResponseHead:
    parser, rec = response_parser()
    parser.start()
    parser.feed(raw + (b"" if b" 204 " in raw else b"hello"))
    assert rec.heads, rec.events
    return rec.heads[0]


@pytest.mark.parametrize("raw", RESPONSES)
@pytest.mark.parametrize("close", [False, True])
@pytest.mark.parametrize("http10", [False, True])
@pytest.mark.parametrize("lines", [b"", b"Set-Cookie: lb=1\r\n", b"Set-Cookie: a\r\nX-H: 1\r\n"])
@pytest.mark.parametrize("body", [b"", b"hello"])
@pytest.mark.parametrize("compiled", [True, False])
@pytest.mark.parametrize("scanned", [True, False])
def test_client_response_out_is_head_plus_body(
    raw: bytes, close: bool, http10: bool, lines: bytes, body: bytes, compiled: bool, scanned: bool
) -> None:
    """Also for the last response on a connection (``close``): from a head the compiled scan
    read (the Connection line dropped by its offset) and from one the general path read."""
    if (compiled or scanned) and not speedups_loaded():
        pytest.skip("the compiled splice is not built")
    if scanned:
        head = _head(raw)
    else:
        with python_only():
            head = _head(raw)
        assert head._conn_at == 0
    if scanned and head._conn_keep_alive:
        assert head._low[head._conn_at :].startswith(b"connection:")
    extra = b"X-Request-ID: abc\r\n" + lines
    expected = client_response_head(head, close, extra, http10) + body
    saved = lb.http.rewrite._OUT, lb.http.rewrite._OUT_CLOSE
    if not compiled:
        lb.http.rewrite._OUT = lb.http.rewrite._OUT_CLOSE = None
    try:
        got = client_response_out(head, close, b"abc", lines, http10, body)
    finally:
        lb.http.rewrite._OUT, lb.http.rewrite._OUT_CLOSE = saved
    assert got == expected


def test_latency_bucket_is_bisect_left() -> None:
    values = [0.0, 1e-9, *LATENCY_BOUNDS, 11.0, 1e9]
    values += [b * f for b in LATENCY_BOUNDS for f in (0.5, 0.999, 1.001, 2.0)]
    for v in values:
        assert latency_bucket(v) == bisect_left(LATENCY_BOUNDS, v), v


HEAD = b"GET /a HTTP/1.1\r\nHost: h\r\nUser-Agent: t\r\n\r\n"


def test_scan_takes_only_a_buffer_that_is_one_head() -> None:
    if not speedups_loaded():
        pytest.skip("the compiled scan is not built")
    from lb.http._speedups import scan_request

    assert scan_request(HEAD, -1) is not None
    assert scan_request(HEAD + HEAD, -1) is None  # two pipelined heads
    assert scan_request(HEAD[:-2], -1) is None  # not yet whole
    assert scan_request(HEAD[:-4] + b"\r\n\r\nbody", -1) is None
    post = b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\n\r\n"
    assert scan_request(post + b"\r\n\r\n", -1) is None  # a body that looks like an end
    # The limits: over either one, the general path answers.
    assert scan_request(HEAD, -1, -1, 14, -1) is None  # the request line is 15 bytes
    assert scan_request(HEAD, -1, -1, 15, -1) is not None
    section = len(HEAD) - HEAD.find(b"\r\n") - 2
    assert scan_request(HEAD, -1, -1, -1, section - 1) is None
    assert scan_request(HEAD, -1, -1, -1, section) is not None


CASES = [
    [HEAD + HEAD],
    [HEAD[:3], HEAD[3:]],
    [HEAD + HEAD + HEAD[:10], HEAD[10:]],
    [b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\n\r\n\r\n\r\n" + HEAD],
    [b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\n\r\nabcd"],
    [b"\r\n" + HEAD],
    [HEAD[:-4] + b"\r\nX-Forwarded-For: 1.2.3.4\r\n\r\n"],
    [b"GET / HTTP/1.0\r\n\r\n", HEAD],  # the first closes: the second is an error
]


@pytest.mark.parametrize("chunks", CASES)
def test_whole_buffer_fast_path_frames_as_byte_by_byte(chunks: list[bytes]) -> None:
    data = b"".join(chunks)
    by_byte = parse_requests([data[i : i + 1] for i in range(len(data))])
    assert parse_requests(chunks) == by_byte
    with python_only():
        assert parse_requests(chunks) == by_byte


@pytest.mark.parametrize(
    ("limits", "status"),
    [
        (RequestLimits(max_request_line=14), 414),
        (RequestLimits(max_header_bytes=len(HEAD) - 20), 431),
    ],
)
def test_limits_still_answered_where_the_scan_declines(limits: RequestLimits, status: int) -> None:
    events = parse_requests([HEAD], limits)
    assert events[0][0] == "error" and events[0][1] == status, events
    with python_only():
        assert parse_requests([HEAD], limits) == events

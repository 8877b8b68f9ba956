"""The compiled fast path gives exactly the pure-Python parsers' (and rewriters') results.

``lb.http._speedups`` takes the common heads and declines the rest; whatever it takes must come
out identical to the general path: every head attribute, the rewritten heads, the events and the
error statuses. Heads are generated from a grammar that mixes the headers both paths care about
(in any case, with odd whitespace, repeated, with valid and invalid values) with ordinary ones.

``LB_REQUIRE_SPEEDUPS=1`` (set by ``.ci/run``) makes a missing extension a failure, since the
benchmark figures assume it.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from lb import _compiled
from lb.http import build_upstream_head, rewrite_response_head
from lb.http.heads import RequestHead, ResponseHead
from lb.http.rewrite import client_response_out
from tests.unit.test_http_helpers import Event, python_only, request_parser, response_parser

compiled = pytest.mark.skipif(
    not _compiled.speedups_loaded(), reason="lb.http._speedups is not built"
)


def test_extension_is_built_when_required() -> None:
    if _compiled.speedups_required():
        assert _compiled.speedups_loaded(), (
            "LB_REQUIRE_SPEEDUPS=1 but lb.http._speedups did not load"
        )
    else:
        pytest.skip("LB_REQUIRE_SPEEDUPS is not set")


def _case(name: str) -> st.SearchStrategy[bytes]:
    """``name`` in a random letter case."""
    return st.tuples(*[st.sampled_from(sorted({c.lower(), c.upper()})) for c in name]).map(
        lambda cs: "".join(cs).encode()
    )


OWS = st.sampled_from([b"", b" ", b"\t", b"  "])

REQUEST_NAMES = [
    "Host",
    "Content-Length",
    "Transfer-Encoding",
    "Connection",
    "Upgrade",
    "Expect",
    "X-Forwarded-For",
    "X-Forwarded-Proto",
    "X-Forwarded-Host",
    "X-Request-ID",
    "Keep-Alive",
    "Proxy-Connection",
    "TE",
    "Trailer",
    "Cookie",
    "Accept",
    "User-Agent",
    "X-Forwarded-Foo",
    "Hos",
    "Hostx",
]
VALUES = [
    b"",
    b"a",
    b"example.com",
    b"Example.COM:8080",
    b"127.0.0.1:18180",
    b"[::1]:80",
    b"a b",
    b"a/b",
    b"caf\xc3\xa9",
    b"0",
    b"5",
    b"18",
    b"007",
    b"1234567890123456789",
    b"-1",
    b"1, 1",
    b"close",
    b"Close",
    b"keep-alive",
    b"Keep-Alive",
    b"keep-alive, close",
    b"Upgrade",
    b"upgrade, keep-alive",
    b"x-custom",
    b"chunked",
    b"gzip, chunked",
    b"websocket",
    b"100-continue",
    b"id-123",
    b"198.51.100.1",
    b"https",
    b"timeout=5",
    b"text/html, */*;q=0.8",
]

header = st.tuples(
    st.sampled_from(REQUEST_NAMES).flatmap(_case), OWS, st.sampled_from(VALUES), OWS
).map(lambda t: t[0] + b":" + t[1] + t[2] + t[3])

request_line = st.tuples(
    st.sampled_from(
        [b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"OPTIONS", b"PATCH", b"CONNECT"]
    ),
    st.sampled_from(
        [b"/", b"/a/b", b"/a?b=c", b"/a?b?c", b"/?", b"/p#f", b"http://h.example/x", b"*", b"h:80"]
    ),
    st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0"]),
).map(b" ".join)

requests = st.tuples(
    request_line,
    st.lists(header, max_size=7),
    st.sampled_from([b"", b"12345", b"5\r\nhello\r\n0\r\n\r\n"]),
).map(lambda t: b"\r\n".join((t[0], *t[1])) + b"\r\n\r\n" + t[2])

# Mostly heads the fast path takes, so that its own results are compared often, not only its
# refusals: one Host, a few benign or hop-by-hop headers, valid Content-Length values.
COMMON_NAMES = [
    "Accept",
    "User-Agent",
    "Cookie",
    "Connection",
    "Content-Length",
    "X-Forwarded-Proto",
    "X-Forwarded-Host",
    "Keep-Alive",
    "TE",
    "Trailer",
    "Proxy-Connection",
]
COMMON_VALUES = [b"close", b"keep-alive", b"Keep-Alive", b"0", b"5", b"12", b"a=1; b=2", b"x"]
common_header = st.tuples(
    st.sampled_from(COMMON_NAMES).flatmap(_case), OWS, st.sampled_from(COMMON_VALUES), OWS
).map(lambda t: t[0] + b":" + t[1] + t[2] + t[3])
host_header = st.tuples(
    _case("Host"), OWS, st.sampled_from([b"a", b"Example.COM:8080", b"[::1]:80", b"a b", b""]), OWS
).map(lambda t: t[0] + b":" + t[1] + t[2] + t[3])
common_requests = st.tuples(
    st.tuples(
        st.sampled_from([b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"PATCH"]),
        st.sampled_from([b"/", b"/a/b", b"/a?b=c", b"/a?b?c", b"/?"]),
        st.sampled_from([b"HTTP/1.1", b"HTTP/1.0"]),
    ).map(b" ".join),
    st.lists(common_header, max_size=5),
    host_header,
    st.integers(0, 5),
    st.sampled_from([b"", b"12345", b"hello, world"]),
).map(lambda t: b"\r\n".join((t[0], *t[1][: t[3]], t[2], *t[1][t[3] :])) + b"\r\n\r\n" + t[4])


def request_head_state(head: RequestHead) -> tuple[object, ...]:
    return (
        head.method,
        head.target,
        head.path,
        head.version,
        head.raw,
        head._low,
        head._line_end,
        head.host,
        head.keep_alive,
        head.content_length,
        head.chunked,
        head.upgrade,
        head.expect_continue,
        head.request_id,
        sorted(head._cut) if head._cut_once else head._cut,
        head._cut_once,
        head._xff,
        head._origin_target,
        build_upstream_head(head, client_ip=b"192.0.2.9", proto=b"http", request_id=b"rid"),
        build_upstream_head(
            head, client_ip=b"::1", proto=b"https", request_id=b"r2", via=b"1.1 lb"
        ),
    )


def run_request(data: bytes, cut: int = 0) -> tuple[list[Event], list[tuple[object, ...]]]:
    parser, rec = request_parser()
    if 0 < cut < len(data):
        parser.feed(data[:cut])
        parser.feed(data[cut:])
    else:
        parser.feed(data)
    parser.feed_eof()
    return rec.events, [request_head_state(h) for h in rec.heads]


@compiled
@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(requests, common_requests))
@example(b"GET / HTTP/1.1\r\nHost: 127.0.0.1:18180\r\n\r\n")
@example(b"GET /a?b HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\n\r\n")
@example(b"POST /u HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello")
@example(b"GET / HTTP/1.0\r\n\r\n")
def test_request_heads_agree(data: bytes) -> None:
    fast = run_request(data)
    with python_only():
        slow = run_request(data)
    assert fast == slow


@compiled
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(requests, common_requests), min_size=2, max_size=4), st.integers(0, 400))
def test_pipelined_requests_agree(heads: list[bytes], cut: int) -> None:
    """Several requests in a row (fed whole, or in two pieces): the paths may alternate from
    one head to the next, and each keeps its own llhttp parser."""
    data = b"".join(heads)
    fast = run_request(data, cut)
    with python_only():
        slow = run_request(data, cut)
    assert fast == slow


RESPONSE_NAMES = [
    "Content-Length",
    "Transfer-Encoding",
    "Connection",
    "Upgrade",
    "Keep-Alive",
    "Proxy-Connection",
    "Server",
    "Content-Type",
    "Set-Cookie",
    "X-Custom",
]

response_header = st.tuples(
    st.sampled_from(RESPONSE_NAMES).flatmap(_case), OWS, st.sampled_from(VALUES), OWS
).map(lambda t: t[0] + b":" + t[1] + t[2] + t[3])

status_line = st.tuples(
    st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0", b"http/1.1"]),
    st.sampled_from(
        [b"200", b"204", b"304", b"404", b"500", b"599", b"600", b"101", b"100", b"099"]
    ),
    st.sampled_from([b"OK", b"", b"Some Reason"]),
).map(b" ".join)

responses = st.tuples(
    status_line,
    st.lists(response_header, max_size=6),
    st.sampled_from([b"", b"hello", b"5\r\nhello\r\n0\r\n\r\n", b"x" * 20]),
).map(lambda t: b"\r\n".join((t[0], *t[1])) + b"\r\n\r\n" + t[2])


def response_head_state(head: ResponseHead, close: bool, http10: bool) -> tuple[object, ...]:
    return (
        head.status,
        head.version,
        head.raw,
        head._low,
        head._line_end,
        head.content_length,
        head.chunked,
        head.no_body,
        head.keep_alive,
        head.close_delimited,
        head.dechunked,
        head.body_bytes,
        head._conn_keep_alive,
        sorted(head._cut) if head._cut_once else head._cut,
        head._cut_once,
        rewrite_response_head(
            head, close=close, extra=b"X-Request-ID: r\r\n", http10_client=http10
        ),
        # The one-buffer response (a head the scan read drops a Connection line by its
        # offset when the client connection closes after it; one the general path read, by
        # a search): the same bytes either way.
        client_response_out(head, close, b"r", b"Set-Cookie: a=b\r\n", http10, b"hello"),
    )


def run_response(
    data: bytes, head_request: bool, dechunk: bool, close: bool
) -> tuple[list[Event], list[tuple[object, ...]]]:
    parser, rec = response_parser()
    parser.start(head_request=head_request, upgrade=True, dechunk=dechunk)
    parser.feed(data)
    parser.feed_eof()
    return rec.events, [response_head_state(h, close, dechunk) for h in rec.heads]


@compiled
@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(responses, st.booleans(), st.booleans(), st.booleans())
@example(
    b"HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Length: 5\r\nConnection: keep-alive\r\n\r\nhello",
    False,
    False,
    False,
)
@example(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", False, False, True)
def test_response_heads_agree(data: bytes, head_request: bool, dechunk: bool, close: bool) -> None:
    fast = run_response(data, head_request, dechunk, close)
    with python_only():
        slow = run_response(data, head_request, dechunk, close)
    assert fast == slow


@compiled
def test_common_heads_take_the_fast_path() -> None:
    """The benchmark's and browsers' usual heads are taken (not declined) by the scan."""
    from lb.http._speedups import scan_request, scan_response

    assert scan_request(b"GET / HTTP/1.1\r\nHost: 127.0.0.1:18180\r\n\r\n", -1) is not None
    browser = (
        b"GET /index.html?q=1 HTTP/1.1\r\nHost: example.com\r\nUser-Agent: Mozilla/5.0\r\n"
        b"Accept: text/html\r\nAccept-Encoding: gzip\r\nConnection: keep-alive\r\n"
        b"Cookie: a=1; b=2\r\n\r\n"
    )
    assert scan_request(browser, -1) is not None
    nginx = (
        b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Wed, 25 Nov 2026 18:50:00 GMT\r\n"
        b"Content-Type: text/plain\r\nContent-Length: 33\r\nConnection: keep-alive\r\n\r\n"
    )
    assert scan_response(nginx, False) is not None
    assert scan_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", False)


@compiled
def test_response_scan_finds_the_end_of_the_head() -> None:
    """The response scan is handed a whole read (head and body) and finds the head's end
    itself, within the head limit; its last field is the head alone (the buffer itself when
    it is only the head), and the Connection line's offset is where that line starts."""
    from lb.http._speedups import scan_response

    head = (
        b"HTTP/1.1 200 OK\r\nServer: nginx\r\nConnection: keep-alive\r\nContent-Length: 9\r\n\r\n"
    )
    body = b"a\r\n\r\nb\r\n\r\n"
    with_body = scan_response(head + body, False)
    assert with_body is not None
    assert with_body[-1] == head
    assert with_body[:-1] == scan_response(head, False)[:-1]  # type: ignore[index]
    alone = scan_response(head, False)
    assert alone is not None and alone[-1] is head
    assert head[alone[-2] :].startswith(b"Connection: keep-alive\r\n")
    assert scan_response(head + body, False, len(head)) is not None
    assert scan_response(head + body, False, len(head) - 1) is None  # over the limit
    assert scan_response(head[:-2], False) is None  # no end yet
    assert scan_response(head[:-2] + b"X", False) is None


_TEMPLATES = [
    b"GET /a/b?c=d HTTP/1.1\r\nHost: example.com\r\nUser-Agent: x/1.0\r\nCookie: a=1; b=2\r\n\r\n",
    b"POST /p HTTP/1.0\r\nConnection: keep-alive\r\nContent-Length: 3\r\nAccept: */*\r\n\r\n",
]


@compiled
@settings(max_examples=3000, deadline=None)
@given(
    template=st.sampled_from(_TEMPLATES),
    at=st.integers(0, 200),
    byte=st.integers(0, 255),
    insert=st.booleans(),
)
@example(template=_TEMPLATES[0], at=40, byte=0, insert=True)  # NUL in a value
@example(template=_TEMPLATES[0], at=43, byte=13, insert=True)  # a bare CR
@example(template=_TEMPLATES[0], at=43, byte=10, insert=True)  # a bare LF
@example(template=_TEMPLATES[0], at=37, byte=32, insert=True)  # SP before the colon
@example(template=_TEMPLATES[0], at=39, byte=32, insert=True)  # obs-fold
@example(template=_TEMPLATES[0], at=8, byte=34, insert=False)  # '"' in the target
def test_scanned_request_heads_are_heads_llhttp_takes(
    template: bytes, at: int, byte: int, insert: bool
) -> None:
    """The scan takes request heads without llhttp, so whatever it takes llhttp must take
    too: one byte changed or inserted anywhere in a valid head is declined, or valid."""
    import httptools

    from lb.http._llhttp import Quiet
    from lb.http._speedups import scan_request

    end = len(template) - 4
    at %= end
    raw = template[:at] + bytes([byte]) + template[at + (0 if insert else 1) :]
    if raw.find(b"\r\n\r\n") != len(raw) - 4:
        return  # not one complete head: the parser never hands such bytes to the scan
    if scan_request(raw, -1) is None:
        return
    parser = httptools.HttpRequestParser(Quiet())
    parser.feed_data(raw)  # raises if llhttp refuses what the scan took


@compiled
def test_real_clients_heads_take_the_fast_path() -> None:
    """wrk's browser head (benchmarks/wrk.py) and ab -k's HTTP/1.0 head are taken by the
    scan: no llhttp, no general path for them."""
    from benchmarks.exchange import HEADS
    from lb.http._speedups import scan_request

    for name in ("minimal", "browser", "ab", "close"):
        fast = scan_request(HEADS[name], -1, 100)
        assert fast is not None, name
    assert scan_request(HEADS["ab"], -1)[7] is True  # keep-alive (HTTP/1.0)
    assert scan_request(HEADS["close"], -1)[7] is False
    assert scan_request(HEADS["browser"], -1, 11) is None  # 12 fields: over the limit

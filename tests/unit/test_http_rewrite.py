"""Head rewriting in both directions, request IDs, and the proxy's own error responses."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lb.http import (
    RequestHead,
    ResponseHead,
    build_upstream_head,
    error_response,
    header_line,
    new_request_id,
    rewrite_response_head,
)
from tests.unit.test_http_helpers import request_parser, response_parser


def parse(data: bytes) -> RequestHead:
    parser, rec = request_parser()
    parser.feed(data)
    assert rec.heads, rec.events
    return rec.heads[0]


def upstream(data: bytes, **kwargs: bytes) -> bytes:
    head = parse(data)
    out, rid = build_upstream_head(
        head,
        client_ip=kwargs.get("client_ip", b"192.0.2.7"),
        proto=kwargs.get("proto", b"http"),
        request_id=kwargs.get("request_id"),
        via=kwargs.get("via"),
    )
    assert rid in out or head.request_id == rid
    return out


def lines(head: bytes) -> list[bytes]:
    assert head.endswith(b"\r\n\r\n")
    return head[:-4].split(b"\r\n")


def test_browser_get_rewrite() -> None:
    out = upstream(
        b"GET /a?b=1 HTTP/1.1\r\nHost: Example.com\r\nUser-Agent: UA/1\r\n"
        b"Connection: keep-alive\r\nAccept: */*\r\n\r\n",
        request_id=b"rid-1",
    )
    assert lines(out) == [
        b"GET /a?b=1 HTTP/1.1",
        b"Host: Example.com",
        b"User-Agent: UA/1",
        b"Accept: */*",
        b"X-Forwarded-For: 192.0.2.7",
        b"X-Forwarded-Proto: http",
        b"X-Forwarded-Host: example.com",
        b"X-Request-ID: rid-1",
    ]


@pytest.mark.parametrize(
    "head",
    [
        b"GET / HTTP/1.1\r\nConnection: keep-alive\r\nHost: a\r\nX: 1\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\nconnection: keep-alive\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nCONNECTION: close\r\nX: 1\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\nX: 1\r\nConnection: te\r\n\r\n",
    ],
)
def test_connection_line_is_dropped_wherever_it_is(head: bytes) -> None:
    assert lines(upstream(head, request_id=b"r")) == [
        b"GET / HTTP/1.1",
        b"Host: a",
        b"X: 1",
        b"X-Forwarded-For: 192.0.2.7",
        b"X-Forwarded-Proto: http",
        b"X-Forwarded-Host: a",
        b"X-Request-ID: r",
    ]


def test_hop_by_hop_headers_are_dropped() -> None:
    out = upstream(
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, X-Secret, x-other\r\n"
        b"Keep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nTE: trailers\r\n"
        b"Trailer: X-Sum\r\nUpgrade: h2c\r\nX-Secret: 1\r\nX-Secret: 2\r\nX-Kept: yes\r\n\r\n"
    )
    names = [line.split(b":")[0].lower() for line in lines(out)[1:]]
    for dropped in (
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"upgrade",
        b"x-secret",
    ):
        assert dropped not in names
    assert b"x-kept" in names


def test_framing_headers_survive_a_connection_listing() -> None:
    # A client naming framing headers in Connection must not make us strip them (smuggling).
    out = upstream(
        b"POST / HTTP/1.1\r\nHost: a\r\nConnection: Content-Length, Host, X-Request-ID\r\n"
        b"Content-Length: 2\r\nX-Request-ID: mine\r\n\r\n"
    )
    assert b"\r\nContent-Length: 2\r\n" in out
    assert b"\r\nHost: a\r\n" in out
    assert b"\r\nX-Request-ID: mine\r\n" in out


def test_transfer_encoding_is_kept_exactly() -> None:
    out = upstream(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n")
    assert b"\r\nTransfer-Encoding: gzip, chunked\r\n" in out


def test_x_forwarded_for_is_appended_and_merged() -> None:
    out = upstream(
        b"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 203.0.113.1\r\n"
        b"X-Forwarded-For: 203.0.113.2, 198.51.100.1\r\nX-Forwarded-Proto: https\r\n"
        b"X-Forwarded-Host: evil\r\n\r\n",
        proto=b"http",
    )
    merged = b"X-Forwarded-For: 203.0.113.1, 203.0.113.2, 198.51.100.1, 192.0.2.7"
    assert lines(out).count(merged) == 1
    assert b"evil" not in out and b"https" not in out
    assert out.count(b"X-Forwarded-For") == 1
    assert b"\r\nX-Forwarded-Proto: http\r\n" in out
    assert b"\r\nX-Forwarded-Host: a\r\n" in out


def test_client_request_id_is_kept() -> None:
    head = parse(b"GET / HTTP/1.1\r\nHost: a\r\nX-Request-ID: Abc-123\r\n\r\n")
    out, rid = build_upstream_head(head, client_ip=b"1.2.3.4", proto=b"http", request_id=b"x")
    assert rid == b"Abc-123"
    assert out.count(b"X-Request-ID") == 1


def test_request_id_is_generated_when_absent() -> None:
    head = parse(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    out1, rid1 = build_upstream_head(head, client_ip=b"1.2.3.4", proto=b"http")
    _, rid2 = build_upstream_head(head, client_ip=b"1.2.3.4", proto=b"http")
    assert rid1 != rid2
    assert re.fullmatch(rb"[0-9a-f]{24}", rid1)
    assert b"\r\nX-Request-ID: " + rid1 + b"\r\n" in out1


def test_duplicate_or_oversized_request_ids_are_replaced() -> None:
    for extra in (
        b"X-Request-ID: a\r\nX-Request-ID: b\r\n",
        b"X-Request-ID: " + b"x" * 300 + b"\r\n",
        b"X-Request-ID:\r\n",
    ):
        head = parse(b"GET / HTTP/1.1\r\nHost: a\r\n" + extra + b"\r\n")
        assert head.request_id is None
        out, rid = build_upstream_head(head, client_ip=b"1.2.3.4", proto=b"http", request_id=b"n")
        assert rid == b"n"
        assert out.count(b"X-Request-ID") == 1 and b"X-Request-ID: n\r\n" in out


def test_new_request_ids_are_unique() -> None:
    ids = {new_request_id() for _ in range(10000)}
    assert len(ids) == 10000


def test_http10_request_goes_upstream_as_http11_keep_alive() -> None:
    out = upstream(b"GET /x HTTP/1.0\r\nConnection: close\r\n\r\n")
    assert lines(out)[0] == b"GET /x HTTP/1.1"
    assert b"Connection" not in out
    assert b"X-Forwarded-Host" not in out  # no Host, nothing to forward


def test_absolute_form_goes_upstream_in_origin_form() -> None:
    out = upstream(b"GET http://Example.com:8080/p?q HTTP/1.1\r\nHost: other\r\n\r\n")
    assert lines(out)[0] == b"GET /p?q HTTP/1.1"
    assert b"\r\nHost: example.com:8080\r\n" in out
    assert b"other" not in out


def test_upgrade_request_keeps_upgrade_and_says_connection_upgrade() -> None:
    out = upstream(
        b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\n"
        b"Upgrade: websocket\r\nSec-WebSocket-Key: k\r\n\r\n"
    )
    assert b"\r\nUpgrade: websocket\r\n" in out
    assert out.endswith(b"\r\nConnection: upgrade\r\n\r\n")
    assert out.count(b"Connection") == 1


def test_via() -> None:
    out = upstream(b"GET / HTTP/1.1\r\nHost: a\r\nVia: 1.0 first\r\n\r\n", via=b"1.1 lb")
    assert b"\r\nVia: 1.0 first\r\n" in out and b"\r\nVia: 1.1 lb\r\n" in out


header_names = st.sampled_from(
    [
        b"Connection",
        b"Keep-Alive",
        b"TE",
        b"Trailer",
        b"Upgrade",
        b"Proxy-Connection",
        b"X-Forwarded-For",
        b"X-Forwarded-Proto",
        b"X-Request-ID",
        b"Accept",
        b"Cookie",
        b"X-Custom",
        b"x-custom",
        b"Via",
    ]
)
header_values = st.sampled_from(
    [b"keep-alive", b"close", b"x-custom", b"Upgrade", b"1.2.3.4", b"a=b", b"", b"v, w"]
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(header_names, header_values), max_size=10), st.booleans())
def test_upstream_head_always_parses_and_never_carries_hop_by_hop(
    headers: list[tuple[bytes, bytes]], post: bool
) -> None:
    head_lines = [b"POST /p HTTP/1.1" if post else b"GET /p HTTP/1.1", b"Host: h"]
    head_lines += [name + b": " + value for name, value in headers]
    if post:
        head_lines.append(b"Content-Length: 2")
    parser, rec = request_parser()
    parser.feed(b"\r\n".join(head_lines) + b"\r\n\r\n" + (b"ok" if post else b""))
    if not rec.heads:
        return  # e.g. an empty Upgrade header: rejected, fine
    head = rec.heads[0]
    out, _ = build_upstream_head(head, client_ip=b"192.0.2.1", proto=b"http")
    again = parse(out + (b"ok" if post else b""))
    names = [n for n, _ in again.headers]
    if head.upgrade is None:
        assert b"connection" not in names and b"upgrade" not in names
    for hop in (b"keep-alive", b"te", b"trailer", b"proxy-connection"):
        assert hop not in names
    assert again.content_length == head.content_length
    assert again.keep_alive
    assert names.count(b"x-forwarded-for") == 1
    assert names.count(b"x-request-id") == 1
    forwarded_for = again.get(b"x-forwarded-for")
    assert forwarded_for is not None and forwarded_for.endswith(b"192.0.2.1")
    kept = [(n, v) for n, v in head.headers if n in (b"accept", b"cookie", b"via")]
    assert [(n, v) for n, v in again.headers if n in (b"accept", b"cookie", b"via")] == kept


# -- responses ---------------------------------------------------------------------------------


def response(data: bytes, **start: bool) -> ResponseHead:
    parser, rec = response_parser()
    parser.start(**start)
    parser.feed(data)
    assert rec.heads, rec.events
    return rec.heads[0]


PLAIN = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 0\r\n\r\n"


def test_response_head_untouched_when_nothing_changes() -> None:
    head = response(PLAIN)
    assert rewrite_response_head(head) is head.raw


def test_response_keep_alive_connection_header_is_kept_while_open() -> None:
    head = response(b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n")
    assert rewrite_response_head(head) is head.raw
    assert rewrite_response_head(head, close=True) == (
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )


def test_response_extra_headers_and_close() -> None:
    head = response(PLAIN)
    extra = header_line(b"X-Request-ID", b"r1") + header_line(b"Set-Cookie", b"lb=b1; Path=/")
    assert rewrite_response_head(head, extra=extra, close=True) == (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 0\r\n"
        b"Connection: close\r\nX-Request-ID: r1\r\nSet-Cookie: lb=b1; Path=/\r\n\r\n"
    )


def test_response_hop_by_hop_headers_are_dropped() -> None:
    head = response(
        b"HTTP/1.1 200 OK\r\nConnection: close, X-Internal\r\nKeep-Alive: timeout=5\r\n"
        b"X-Internal: secret\r\nUpgrade: h2c\r\nProxy-Connection: x\r\nContent-Length: 0\r\n\r\n"
    )
    assert not head.keep_alive  # upstream said close: do not reuse it...
    # ...but the client connection stays open, with none of the backend's hop-by-hop headers.
    assert rewrite_response_head(head) == b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"


def test_http10_backend_status_line_is_sent_as_http11() -> None:
    head = response(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\nConnection: keep-alive\r\n\r\n")
    assert rewrite_response_head(head).startswith(b"HTTP/1.1 200 OK\r\n")


def test_http10_client_gets_explicit_keep_alive() -> None:
    head = response(PLAIN)
    out = rewrite_response_head(head, http10_client=True)
    assert out.endswith(b"Content-Length: 0\r\nConnection: keep-alive\r\n\r\n")
    head = response(b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n")
    assert rewrite_response_head(head, http10_client=True).count(b"keep-alive") == 1


def test_close_delimited_response_forces_connection_close() -> None:
    head = response(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n")
    assert head.close_delimited
    assert rewrite_response_head(head).endswith(b"Connection: close\r\n\r\n")


def test_dechunked_response_loses_transfer_encoding() -> None:
    head = response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX: 1\r\n\r\n", dechunk=True)
    assert rewrite_response_head(head, http10_client=True) == (
        b"HTTP/1.1 200 OK\r\nX: 1\r\nConnection: close\r\n\r\n"
    )


def test_101_keeps_its_upgrade_headers() -> None:
    head = response(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Keep-Alive: timeout=1\r\n\r\n",
        upgrade=True,
    )
    out = rewrite_response_head(head, close=True, extra=b"X-Request-ID: r\r\n")
    assert out == (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"X-Request-ID: r\r\n\r\n"
    )


def test_response_header_case_and_values_are_preserved() -> None:
    head = response(
        b"HTTP/1.1 200 OK\r\nX-MiXeD: VaLuE \r\nconnection: Close\r\nContent-Length: 0\r\n\r\n"
    )
    assert rewrite_response_head(head) == (
        b"HTTP/1.1 200 OK\r\nX-MiXeD: VaLuE \r\nContent-Length: 0\r\n\r\n"
    )


@pytest.mark.parametrize(
    ("name", "value"),
    [(b"X Y", b"v"), (b"X:", b"v"), (b"", b"v"), (b"X", b"a\r\nB: c"), (b"X", b"\n")],
)
def test_header_line_refuses_injection(name: bytes, value: bytes) -> None:
    with pytest.raises(ValueError):
        header_line(name, value)


# -- error responses ---------------------------------------------------------------------------


@pytest.mark.parametrize("status", [400, 408, 413, 414, 431, 501, 502, 503, 504, 505])
def test_error_responses_are_complete_and_close(status: int) -> None:
    data = error_response(status, "why it failed")
    head, _, body = data.partition(b"\r\n\r\n")
    head_lines = head.split(b"\r\n")
    assert head_lines[0].startswith(b"HTTP/1.1 %d " % status)
    assert b"Connection: close" in head_lines
    assert b"Content-Length: %d" % len(body) in head_lines
    assert body.startswith(b"%d " % status) and body.endswith(b": why it failed\n")


def test_error_response_extras() -> None:
    assert b"\r\nRetry-After: 5\r\n" in error_response(503, "no backend", 5)
    assert b"Retry-After" not in error_response(503, "no backend")
    head_only = error_response(502, "bad gateway", body=False)
    assert head_only.endswith(b"\r\n\r\n")
    assert b"Content-Length: 0" not in head_only
    assert error_response(400) == error_response(400)  # cached
    assert b"\r\n" not in error_response(400, "evil\r\nX: y").partition(b"\r\n\r\n")[2][:-1]

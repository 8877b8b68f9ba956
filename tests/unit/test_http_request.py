"""Client side: request heads, limits, smuggling checks, pipelining and pausing.

Each table row is a transcript: what the client sends, and the status the proxy must answer.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lb.http import RequestLimits, RequestParser
from tests.unit.test_http_helpers import (
    RequestRecorder,
    first_error,
    merged,
    parse_requests,
    request_parser,
)

GET = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"


def req(*lines: bytes, line: bytes = b"GET / HTTP/1.1", body: bytes = b"") -> bytes:
    return b"\r\n".join((line, *lines)) + b"\r\n\r\n" + body


# -- status transcripts ------------------------------------------------------------------------

REJECTED: list[tuple[str, bytes, int]] = [
    # limits
    ("request line over 8192", b"GET /" + b"a" * 8200 + b" HTTP/1.1\r\nHost: a\r\n\r\n", 414),
    ("header section over 32768", req(b"Host: a", b"X: " + b"v" * 33000), 431),
    ("101 header fields", req(b"Host: a", *[b"X-%d: 1" % i for i in range(100)]), 431),
    # framing conflicts (smuggling)
    ("CL and TE", req(b"Host: a", b"Content-Length: 3", b"Transfer-Encoding: chunked"), 400),
    ("TE and CL", req(b"Host: a", b"Transfer-Encoding: chunked", b"Content-Length: 3"), 400),
    ("duplicate CL, differing", req(b"Host: a", b"Content-Length: 1", b"Content-Length: 2"), 400),
    ("duplicate CL, identical", req(b"Host: a", b"Content-Length: 1", b"Content-Length: 1"), 400),
    ("CL list", req(b"Host: a", b"Content-Length: 1, 1"), 400),
    ("CL plus sign", req(b"Host: a", b"Content-Length: +1"), 400),
    ("CL negative", req(b"Host: a", b"Content-Length: -1"), 400),
    ("CL hex", req(b"Host: a", b"Content-Length: 0x1"), 400),
    ("CL empty", req(b"Host: a", b"Content-Length:"), 400),
    ("CL inner space", req(b"Host: a", b"Content-Length: 1 2"), 400),
    ("CL overflow", req(b"Host: a", b"Content-Length: 99999999999999999999999"), 400),
    ("TE chunked not last", req(b"Host: a", b"Transfer-Encoding: chunked, gzip"), 400),
    ("TE without chunked", req(b"Host: a", b"Transfer-Encoding: gzip"), 400),
    ("TE chunked twice", req(b"Host: a", b"Transfer-Encoding: chunked, chunked"), 400),
    (
        "TE split, chunked not last",
        req(b"Host: a", b"Transfer-Encoding: chunked", b"Transfer-Encoding: gzip"),
        400,
    ),
    ("TE unknown token", req(b"Host: a", b"Transfer-Encoding: xchunked"), 400),
    (
        "TE in HTTP/1.0",
        req(b"Host: a", b"Transfer-Encoding: chunked", line=b"POST / HTTP/1.0", body=b"0\r\n\r\n"),
        400,
    ),
    # header syntax
    ("obs-fold", req(b"Host: a", b"X: a", b" folded"), 400),
    ("obs-fold with tab", req(b"Host: a", b"X: a", b"\tfolded"), 400),
    ("space before colon", req(b"Host: a", b"Content-Length : 3"), 400),
    ("space in name", req(b"Host: a", b"X Y: 1"), 400),
    ("empty name", req(b"Host: a", b": 1"), 400),
    ("control char in name", req(b"Host: a", b"X\x01: 1"), 400),
    ("NUL in value", req(b"Host: a", b"X: a\x00b"), 400),
    ("DEL in value", req(b"Host: a", b"X: a\x7fb"), 400),
    ("bare CR in value", req(b"Host: a", b"X: a\rb"), 400),
    ("bare LF line end", b"GET / HTTP/1.1\r\nHost: a\nX: 1\r\n\r\n", 400),
    ("bare LF after request line", b"GET / HTTP/1.1\nHost: a\r\n\r\n", 400),
    ("whitespace before first header", b"GET / HTTP/1.1\r\n Host: a\r\n\r\n", 400),
    # Host
    ("missing Host on 1.1", req(b"X: 1"), 400),
    ("duplicate Host", req(b"Host: a", b"Host: a"), 400),
    ("Host with space", req(b"Host: a b"), 400),
    ("Host with userinfo", req(b"Host: user@a"), 400),
    ("Host with slash", req(b"Host: a/b"), 400),
    # request line
    ("double space", b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("trailing space", b"GET / HTTP/1.1 \r\nHost: a\r\n\r\n", 400),
    ("fragment", req(b"Host: a", line=b"GET /a#b HTTP/1.1"), 400),
    ("authority-form", req(b"Host: a", line=b"GET a:80 HTTP/1.1"), 400),
    ("bad absolute-form", req(b"Host: a", line=b"GET http:///x HTTP/1.1"), 400),
    ("unknown method", req(b"Host: a", line=b"BREW / HTTP/1.1"), 400),
    ("lowercase method", req(b"Host: a", line=b"get / HTTP/1.1"), 400),
    ("space in target", req(b"Host: a", line=b"GET /a b HTTP/1.1"), 400),
    ("not HTTP", req(b"Host: a", line=b"GET / RTSP/1.0"), 400),
    ("HTTP/2.0", req(b"Host: a", line=b"GET / HTTP/2.0"), 505),
    ("HTTP/0.9", req(b"Host: a", line=b"GET / HTTP/0.9"), 505),
    ("HTTP/1.2", req(b"Host: a", line=b"GET / HTTP/1.2"), 400),
    ("CONNECT", req(b"Host: a:443", line=b"CONNECT a:443 HTTP/1.1"), 501),
    ("CONNECT origin-form", req(b"Host: a", line=b"CONNECT / HTTP/1.1"), 501),
    ("h2 preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 400),
    ("TLS handshake", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40, 400),
    # upgrade
    (
        "upgrade with a body",
        req(b"Host: a", b"Connection: upgrade", b"Upgrade: websocket", b"Content-Length: 5"),
        400,
    ),
    (
        "upgrade with chunked body",
        req(b"Host: a", b"Connection: upgrade", b"Upgrade: x", b"Transfer-Encoding: chunked"),
        400,
    ),
    ("empty Upgrade", req(b"Host: a", b"Connection: upgrade", b"Upgrade:"), 400),
    # chunked body syntax
    ("chunk size hex prefix", req(b"Host: a", b"Transfer-Encoding: chunked", body=b"0x1\r\n"), 400),
    ("chunk size plus", req(b"Host: a", b"Transfer-Encoding: chunked", body=b"+1\r\na\r\n"), 400),
    ("chunk size underscore", req(b"Host: a", b"Transfer-Encoding: chunked", body=b"1_0\r\n"), 400),
    ("chunk size space", req(b"Host: a", b"Transfer-Encoding: chunked", body=b"1 \r\na\r\n"), 400),
    ("chunk size bare LF", req(b"Host: a", b"Transfer-Encoding: chunked", body=b"1\na\r\n"), 400),
    ("chunk size empty", req(b"Host: a", b"Transfer-Encoding: chunked", body=b"\r\n"), 400),
    (
        "chunk size huge",
        req(b"Host: a", b"Transfer-Encoding: chunked", body=b"1" * 17 + b"\r\n"),
        400,
    ),
    (
        "chunk data too long",
        req(b"Host: a", b"Transfer-Encoding: chunked", body=b"1\r\nab\r\n0\r\n\r\n"),
        400,
    ),
    (
        "chunk data bare LF",
        req(b"Host: a", b"Transfer-Encoding: chunked", body=b"1\r\na\n0\r\n\r\n"),
        400,
    ),
    (
        "chunk extension control char",
        req(b"Host: a", b"Transfer-Encoding: chunked", body=b"1;a=\x01\r\na\r\n"),
        400,
    ),
    (
        "folded trailer",
        req(b"Host: a", b"Transfer-Encoding: chunked", body=b"0\r\nT: 1\r\n folded\r\n\r\n"),
        400,
    ),
    (
        "trailer without colon",
        req(b"Host: a", b"Transfer-Encoding: chunked", body=b"0\r\nnocolon\r\n\r\n"),
        400,
    ),
]


@pytest.mark.parametrize(
    ("data", "status"), [(d, s) for _, d, s in REJECTED], ids=[n for n, _, _ in REJECTED]
)
def test_rejected_requests_get_the_right_status(data: bytes, status: int) -> None:
    error = first_error(parse_requests([data]))
    assert error is not None
    assert error[0] == status
    assert error[1]  # a short reason for the log


@pytest.mark.parametrize(
    ("data", "status"), [(d, s) for _, d, s in REJECTED], ids=[n for n, _, _ in REJECTED]
)
def test_rejected_requests_byte_by_byte(data: bytes, status: int) -> None:
    events = parse_requests([data[i : i + 1] for i in range(len(data))])
    error = first_error(events)
    assert error is not None and error[0] == status


def test_no_events_after_an_error() -> None:
    parser, rec = request_parser()
    parser.feed(req(b"Host: a", b"Host: b") + GET)
    assert rec.events == [("error", 400, "duplicate Host header")]
    parser.feed(GET)
    parser.resume()
    assert len(rec.events) == 1
    assert parser.closed


def test_body_limit_on_content_length_is_checked_before_the_head_is_delivered() -> None:
    events = parse_requests(
        [req(b"Host: a", b"Content-Length: 11", line=b"POST / HTTP/1.1")],
        RequestLimits(max_body_bytes=10),
    )
    assert events == [("error", 413, "request body too large")]


def test_body_limit_on_chunked_body_fires_mid_stream() -> None:
    data = req(b"Host: a", b"Transfer-Encoding: chunked", line=b"POST / HTTP/1.1")
    events = parse_requests(
        [data + b"6\r\nabcdef\r\n6\r\nghijkl\r\n0\r\n\r\n"], RequestLimits(max_body_bytes=10)
    )
    assert events[0][0] == "head"
    assert events[-1] == ("error", 413, "request body too large")


def test_limits_are_configurable() -> None:
    limits = RequestLimits(max_request_line=20, max_header_bytes=30, max_headers=2)
    assert first_error(
        parse_requests([req(b"Host: a", line=b"GET /" + b"a" * 20 + b" HTTP/1.1")], limits)
    ) == (
        414,
        "request line too long",
    )
    assert first_error(parse_requests([req(b"Host: a", b"X: " + b"b" * 30)], limits)) == (
        431,
        "request header section too large",
    )
    assert first_error(parse_requests([req(b"Host: a", b"X: 1", b"Y: 2")], limits)) == (
        431,
        "too many header fields",
    )
    assert parse_requests([req(b"Host: a", b"X: 1")], limits)[-1] == ("end",)


@pytest.mark.parametrize(("count", "ok"), [(100, True), (101, False)])
def test_header_count_limit_with_the_shortest_possible_lines(count: int, ok: bool) -> None:
    # "a:" lines are the densest a head can be; the count must still be exact.
    events = parse_requests([req(b"Host: a", *[b"a:"] * (count - 1))])
    assert (events[-1] == ("end",)) is ok
    if not ok:
        assert events == [("error", 431, "too many header fields")]


def test_an_endless_request_line_is_rejected_before_it_ends() -> None:
    parser, rec = request_parser()
    parser.feed(b"GET /")
    for _ in range(9):
        parser.feed(b"a" * 1000)
    assert rec.events == [("error", 414, "request line too long")]


def test_an_endless_header_section_is_rejected_before_it_ends() -> None:
    parser, rec = request_parser()
    parser.feed(b"GET / HTTP/1.1\r\nHost: a\r\n")
    for _ in range(40):
        parser.feed(b"X: " + b"a" * 1000 + b"\r\n")
    assert rec.events == [("error", 431, "request header section too large")]


def test_garbage_is_rejected_without_waiting_for_the_end_of_a_head() -> None:
    parser, rec = request_parser()
    parser.feed(b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03")
    assert rec.events and rec.events[0][:2] == ("error", 400)


# -- accepted requests and their heads ---------------------------------------------------------


def test_browser_get() -> None:
    parser, rec = request_parser(auto_resume=False)
    parser.feed(
        b"GET /index.html?q=1 HTTP/1.1\r\nHost: Example.COM:8080\r\n"
        b"User-Agent: Mozilla/5.0\r\nAccept: */*\r\nConnection: keep-alive\r\n"
        b"Cookie: a=1; sid=xyz\r\nX-Request-ID: abc-123\r\n\r\n"
    )
    assert rec.events == [("head", b"GET", b"/index.html?q=1", b"example.com:8080"), ("end",)]
    head = rec.heads[0]
    assert head.path == b"/index.html"
    assert head.version == b"1.1"
    assert head.keep_alive
    assert head.content_length is None and not head.chunked and not head.has_body
    assert head.upgrade is None and not head.expect_continue
    assert head.request_id == b"abc-123"
    assert head.cookie(b"sid") == b"xyz"
    assert head.cookie(b"none") is None
    assert head.get(b"user-agent") == b"Mozilla/5.0"
    assert head.get(b"absent") is None
    assert head.headers[0] == (b"host", b"Example.COM:8080")
    assert [n for n, _ in head.headers] == [
        b"host",
        b"user-agent",
        b"accept",
        b"connection",
        b"cookie",
        b"x-request-id",
    ]
    assert parser.paused and parser.requests == 1


@pytest.mark.parametrize(
    ("version", "connection", "keep_alive"),
    [
        (b"1.1", None, True),
        (b"1.1", b"close", False),
        (b"1.1", b"Close", False),
        (b"1.1", b"keep-alive", True),
        (b"1.1", b"foo, close", False),
        (b"1.0", None, False),
        (b"1.0", b"keep-alive", True),
        (b"1.0", b"Keep-Alive", True),
        (b"1.0", b"keep-alive, close", False),
    ],
)
def test_keep_alive(version: bytes, connection: bytes | None, keep_alive: bool) -> None:
    lines = [b"Host: a"] + ([b"Connection: " + connection] if connection else [])
    parser, rec = request_parser()
    parser.feed(req(*lines, line=b"GET / HTTP/" + version))
    assert rec.heads[0].keep_alive is keep_alive


def test_http10_without_host_is_fine() -> None:
    parser, rec = request_parser()
    parser.feed(b"GET / HTTP/1.0\r\n\r\n")
    assert rec.events == [("head", b"GET", b"/", None), ("end",)]


def test_expect_continue() -> None:
    parser, rec = request_parser()
    parser.feed(
        req(
            b"Host: a",
            b"Expect: 100-Continue",
            b"Content-Length: 2",
            line=b"PUT /x HTTP/1.1",
        )
    )
    assert rec.heads[0].expect_continue
    assert rec.events == [("head", b"PUT", b"/x", b"a")]
    parser.feed(b"ok")
    assert rec.events[-2:] == [("body", b"ok"), ("end",)]


def test_absolute_form_target_gives_host_and_path() -> None:
    parser, rec = request_parser()
    parser.feed(req(b"Host: ignored", line=b"GET http://Example.com:81/p/q?x=1 HTTP/1.1"))
    head = rec.heads[0]
    assert head.host == b"example.com:81"
    assert head.path == b"/p/q"
    parser2, rec2 = request_parser()
    parser2.feed(req(line=b"GET https://b.example?x HTTP/1.1"))
    assert rec2.heads[0].host == b"b.example"
    assert rec2.heads[0].path == b"/"


def test_options_star() -> None:
    parser, rec = request_parser()
    parser.feed(req(b"Host: a", line=b"OPTIONS * HTTP/1.1"))
    assert rec.events == [("head", b"OPTIONS", b"*", b"a"), ("end",)]


def test_leading_empty_lines_are_ignored() -> None:
    assert parse_requests([b"\r\n\r\n" + GET]) == [("head", b"GET", b"/", b"a"), ("end",)]
    assert parse_requests([b"\r", b"\n", GET]) == [("head", b"GET", b"/", b"a"), ("end",)]


def test_obs_text_in_values_is_accepted() -> None:
    parser, rec = request_parser()
    parser.feed(req(b"Host: a", b"X-Name: caf\xc3\xa9"))
    assert rec.heads[0].get(b"x-name") == b"caf\xc3\xa9"


def test_content_length_body_is_raw_and_exact() -> None:
    data = req(b"Host: a", b"Content-Length: 5", line=b"POST / HTTP/1.1", body=b"hello")
    assert parse_requests([data + GET]) == [
        ("head", b"POST", b"/", b"a"),
        ("body", b"hello"),
        ("end",),
        ("head", b"GET", b"/", b"a"),
        ("end",),
    ]


def test_content_length_zero_has_no_body_events() -> None:
    data = req(b"Host: a", b"Content-Length: 0", line=b"POST / HTTP/1.1")
    assert parse_requests([data]) == [("head", b"POST", b"/", b"a"), ("end",)]


def test_chunked_body_is_forwarded_with_its_framing() -> None:
    body = b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: 1\r\n\r\n"
    data = req(b"Host: a", b"Transfer-Encoding: chunked", line=b"POST / HTTP/1.1", body=body)
    parser, rec = request_parser()
    parser.feed(data + GET)
    assert merged(rec.events) == [
        ("head", b"POST", b"/", b"a"),
        ("body", body),
        ("end",),
        ("head", b"GET", b"/", b"a"),
        ("end",),
    ]
    assert rec.heads[0].chunked
    assert rec.heads[0].body_bytes == len(body)


def test_transfer_encoding_gzip_then_chunked_is_chunked() -> None:
    data = req(b"Host: a", b"Transfer-Encoding: gzip, chunked", line=b"POST / HTTP/1.1")
    parser, rec = request_parser()
    parser.feed(data + b"0\r\n\r\n")
    assert rec.heads[0].chunked
    assert rec.events[-1] == ("end",)


# -- pipelining and pausing --------------------------------------------------------------------


def test_pipelined_requests_wait_for_resume() -> None:
    parser, rec = request_parser(auto_resume=False)
    post = req(b"Host: b", b"Content-Length: 3", line=b"POST /2 HTTP/1.1", body=b"abc")
    third = req(b"Host: c", line=b"GET /3 HTTP/1.1")
    parser.feed(GET + post + third[:10])
    assert rec.events == [("head", b"GET", b"/", b"a"), ("end",)]
    assert parser.paused
    assert parser.pending_bytes == len(post) + 10
    parser.feed(third[10:])  # still paused: stashed, not parsed
    assert len(rec.events) == 2
    parser.resume()
    assert rec.events[2:] == [("head", b"POST", b"/2", b"b"), ("body", b"abc"), ("end",)]
    assert parser.pending_bytes == len(third)
    parser.resume()
    assert rec.events[5:] == [("head", b"GET", b"/3", b"c"), ("end",)]
    assert parser.pending_bytes == 0
    parser.resume()
    assert not parser.paused and not parser.in_message


def test_many_pipelined_requests_resumed_from_inside_callbacks() -> None:
    # A handler that resumes inside on_request_end must not recurse once per request.
    events = parse_requests([GET * 3000])
    assert len(events) == 6000
    assert events[-1] == ("end",)


class FeedsFromCallback(RequestRecorder):
    """Plays an adapter that feeds late bytes and resumes from inside ``on_request_end``."""

    def on_request_end(self) -> None:
        super().on_request_end()
        if len(self.events) == 2 and self.parser is not None:
            self.parser.feed(req(b"Host: late", line=b"GET /late HTTP/1.1"))
            self.parser.resume()


def test_feeding_from_inside_a_callback_keeps_byte_order() -> None:
    rec = FeedsFromCallback(auto_resume=False)
    parser = rec.parser = RequestParser(rec)
    parser.feed(GET + req(b"Host: b", line=b"GET /b HTTP/1.1"))
    parser.resume()
    assert [e[2] for e in rec.events if e[0] == "head"] == [b"/", b"/b", b"/late"]


def test_in_message_and_idle() -> None:
    parser, _ = request_parser(auto_resume=False)
    assert not parser.in_message
    parser.feed(GET[:5])
    assert parser.in_message
    parser.feed(GET[5:])
    assert not parser.in_message and parser.paused


# -- upgrade -----------------------------------------------------------------------------------

UPGRADE = req(b"Host: a", b"Connection: Upgrade", b"Upgrade: websocket", line=b"GET /ws HTTP/1.1")


def test_upgrade_request_then_tunnel_bytes_are_detached() -> None:
    parser, rec = request_parser(auto_resume=False)
    parser.feed(UPGRADE + b"\x81\x05hello")
    assert rec.events == [("head", b"GET", b"/ws", b"a"), ("end",)]
    assert rec.heads[0].upgrade == b"websocket"
    # The backend said 101: the rest belongs to the tunnel.
    assert parser.detach() == b"\x81\x05hello"
    assert parser.closed


def test_declined_upgrade_continues_as_http() -> None:
    parser, rec = request_parser(auto_resume=False)
    parser.feed(UPGRADE + GET)
    parser.resume()  # the backend answered 200: no tunnel
    assert rec.events[-2:] == [("head", b"GET", b"/", b"a"), ("end",)]


def test_upgrade_header_without_connection_upgrade_is_not_an_upgrade() -> None:
    parser, rec = request_parser()
    parser.feed(req(b"Host: a", b"Upgrade: websocket"))
    assert rec.heads[0].upgrade is None
    parser.feed(req(b"Host: a", b"Connection: keep-alive, upgrade", b"Upgrade: h2c"))
    assert rec.heads[1].upgrade == b"h2c"


# -- EOF ---------------------------------------------------------------------------------------


def test_eof_when_idle_is_quiet() -> None:
    assert parse_requests([GET], eof=True) == [("head", b"GET", b"/", b"a"), ("end",)]


def test_eof_mid_head_or_mid_body_is_an_error() -> None:
    assert parse_requests([GET[:10]], eof=True) == [
        ("error", 400, "connection closed before the request head was complete")
    ]
    post = req(b"Host: a", b"Content-Length: 5", line=b"POST / HTTP/1.1", body=b"ab")
    events = parse_requests([post], eof=True)
    assert events[-1] == ("error", 400, "connection closed before the request body was complete")


def test_eof_while_paused_is_checked_after_resume() -> None:
    parser, rec = request_parser(auto_resume=False)
    parser.feed(GET + GET[:10])
    parser.feed_eof()
    assert rec.events == [("head", b"GET", b"/", b"a"), ("end",)]
    parser.resume()
    assert rec.events[-1][:2] == ("error", 400)


# -- split invariance --------------------------------------------------------------------------

CHUNKED_POST = req(
    b"Host: a",
    b"Transfer-Encoding: chunked",
    line=b"POST /upload HTTP/1.1",
    body=b'3\r\nabc\r\n10;name="v"\r\n0123456789abcdef\r\n0\r\nT: x\r\n\r\n',
)
STREAM = (
    b"\r\n"
    + GET
    + CHUNKED_POST
    + req(
        b"Host: b",
        b"Connection: keep-alive",
        b"Content-Length: 4",
        line=b"PUT /p HTTP/1.0",
        body=b"data",
    )
    + req(b"Host: c", b"Connection: close", line=b"DELETE /d HTTP/1.1")
)


def test_chunked_request_split_at_every_byte_boundary() -> None:
    whole = parse_requests([CHUNKED_POST])
    assert whole[-1] == ("end",)
    for i in range(len(CHUNKED_POST) + 1):
        assert parse_requests([CHUNKED_POST[:i], CHUNKED_POST[i:]]) == whole, i


@pytest.mark.parametrize(
    ("first", "closes"),
    [
        (req(b"Host: a", b"Connection: close"), True),
        (req(b"Host: a", b"Connection: close", b"Content-Length: 2", body=b"ok"), True),
        (req(b"Host: a", line=b"GET / HTTP/1.0"), True),
        (req(b"Host: a", b"Content-Length: 2", line=b"PUT / HTTP/1.0", body=b"ok"), True),
        (req(b"Connection: keep-alive", line=b"GET / HTTP/1.0"), False),
        # Proxy-Connection is hop-by-hop for us, not a Connection header (llhttp thinks
        # otherwise; the parser does not follow it there).
        (req(b"Host: a", b"Proxy-Connection: close"), False),
    ],
)
def test_a_request_after_one_that_closes_the_connection_is_an_error(
    first: bytes, closes: bool
) -> None:
    events = parse_requests([first + GET])
    assert [e[0] for e in events].count("end") == (1 if closes else 2)
    if closes:
        assert first_error(events) == (400, "Data after `Connection: close`")


def test_stream_one_byte_at_a_time() -> None:
    whole = parse_requests([STREAM])
    assert [e[0] for e in whole].count("end") == 4
    assert parse_requests([STREAM[i : i + 1] for i in range(len(STREAM))]) == whole


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=12))
def test_any_split_of_a_pipelined_stream_gives_the_same_events(cuts: list[int]) -> None:
    points = sorted(set(cuts))
    chunks = [STREAM[a:b] for a, b in zip([0, *points], [*points, len(STREAM)], strict=True)]
    assert parse_requests(chunks) == parse_requests([STREAM])


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.binary(min_size=1, max_size=40), max_size=6),
    st.lists(st.integers(min_value=0, max_value=400), max_size=8),
)
def test_chunked_bodies_survive_any_split(payloads: list[bytes], cuts: list[int]) -> None:
    body = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in payloads) + b"0\r\n\r\n"
    data = req(b"Host: a", b"Transfer-Encoding: chunked", line=b"POST / HTTP/1.1", body=body) + GET
    points = sorted({c for c in cuts if c <= len(data)})
    chunks = [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]
    assert parse_requests(chunks) == [
        ("head", b"POST", b"/", b"a"),
        ("body", body),
        ("end",),
        ("head", b"GET", b"/", b"a"),
        ("end",),
    ]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_raise(data: bytes) -> None:
    # Whatever arrives, the parser answers with events (maybe an error), never an exception.
    parse_requests([data, data], eof=True)

"""Upstream side: where each response ends, and whether the connection may be reused."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lb.http import ResponseParser
from tests.unit.test_http_helpers import ResponseRecorder, merged, response_parser

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"


def run(
    chunks: list[bytes],
    *,
    head_request: bool = False,
    upgrade: bool = False,
    dechunk: bool = False,
    eof: bool = False,
) -> list[tuple[object, ...]]:
    parser, rec = response_parser()
    parser.start(head_request=head_request, upgrade=upgrade, dechunk=dechunk)
    for chunk in chunks:
        parser.feed(chunk)
    if eof:
        parser.feed_eof()
    return merged(rec.events)


def test_content_length_response_in_one_buffer() -> None:
    parser, rec = response_parser()
    parser.start()
    parser.feed(OK)
    assert rec.events == [("head", 200), ("body", b"hello"), ("end", True)]
    head = rec.heads[0]
    assert head.content_length == 5 and head.keep_alive and not head.close_delimited
    assert head.body_bytes == 5
    assert parser.idle and parser.responses == 1


def test_content_length_response_across_buffers() -> None:
    assert run([OK[:20], OK[20:-3], OK[-3:]]) == [("head", 200), ("body", b"hello"), ("end", True)]


def test_keep_alive_connection_serves_many_responses() -> None:
    parser, rec = response_parser()
    for _ in range(3):
        parser.start()
        parser.feed(OK)
    assert rec.events.count(("end", True)) == 3


@pytest.mark.parametrize(
    ("head", "reusable"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", True),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", False),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: Keep-Alive\r\n\r\n", True),
        (b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", False),
        (b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\nConnection: keep-alive\r\n\r\n", True),
        (b"HTTP/1.1 204 No Content\r\n\r\n", True),
    ],
)
def test_reusability(head: bytes, reusable: bool) -> None:
    assert run([head])[-1] == ("end", reusable)


def test_chunked_response_is_forwarded_raw() -> None:
    body = b"5\r\nhello\r\n7;x=y\r\n, world\r\n0\r\nX-Checksum: 1\r\n\r\n"
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    assert run([head + body]) == [("head", 200), ("body", body), ("end", True)]


def test_chunked_response_split_at_every_byte_boundary() -> None:
    data = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    whole = run([data])
    for i in range(len(data) + 1):
        assert run([data[:i], data[i:]]) == whole, i


def test_close_delimited_response_ends_at_eof() -> None:
    data = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nsome"
    parser, rec = response_parser()
    parser.start()
    parser.feed(data)
    parser.feed(b" more")
    assert rec.heads[0].close_delimited and not rec.heads[0].keep_alive
    assert merged(rec.events) == [("head", 200), ("body", b"some more")]
    parser.feed_eof()
    assert rec.events[-1] == ("end", False)
    assert parser.closed


def test_transfer_encoding_without_chunked_is_close_delimited() -> None:
    data = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nzzz"
    assert run([data], eof=True) == [("head", 200), ("body", b"zzz"), ("end", False)]


def test_head_response_has_no_body_whatever_content_length_says() -> None:
    parser, rec = response_parser()
    parser.start(head_request=True)
    parser.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
    assert rec.events == [("head", 200), ("end", True)]
    assert rec.heads[0].no_body and rec.heads[0].content_length == 1000
    # llhttp was left waiting for 1000 bytes; the next response must still parse.
    parser.start()
    parser.feed(OK)
    assert rec.events[2:] == [("head", 200), ("body", b"hello"), ("end", True)]


def test_head_response_with_chunked_or_no_length_has_no_body() -> None:
    for head in (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n\r\n",
    ):
        assert run([head], head_request=True) == [("head", 200), ("end", True)]


@pytest.mark.parametrize("status", [b"204 No Content", b"304 Not Modified"])
def test_204_and_304_have_no_body(status: bytes) -> None:
    parser, rec = response_parser()
    parser.start()
    parser.feed(b"HTTP/1.1 " + status + b"\r\nContent-Length: 10\r\n\r\n")
    assert rec.events == [("head", int(status[:3])), ("end", True)]
    parser.start()
    parser.feed(OK)
    assert rec.events[-1] == ("end", True)


def test_body_after_204_is_extra_bytes() -> None:
    parser, rec = response_parser()
    parser.start()
    parser.feed(b"HTTP/1.1 204 No Content\r\n\r\noops")
    assert rec.events == [("head", 204), ("end", False)]
    assert parser.extra_bytes == 4 and parser.closed


def test_100_continue_then_final_response() -> None:
    interim = b"HTTP/1.1 100 Continue\r\n\r\n"
    assert run([interim + OK]) == [
        ("interim", 100),
        ("head", 200),
        ("body", b"hello"),
        ("end", True),
    ]
    assert run([interim, OK]) == [
        ("interim", 100),
        ("head", 200),
        ("body", b"hello"),
        ("end", True),
    ]


def test_103_early_hints_and_several_interims() -> None:
    hints = b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"
    assert run([hints + hints + OK])[:3] == [("interim", 103), ("interim", 103), ("head", 200)]


def test_101_switching_protocols_hands_over_the_rest() -> None:
    head = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
    parser, rec = response_parser()
    parser.start(upgrade=True)
    parser.feed(head + b"\x81\x02hi")
    assert rec.events == [("head", 101), ("upgrade", b"\x81\x02hi")]
    assert parser.closed
    parser.feed(b"more")  # the adapter relays these itself; the parser ignores them
    assert len(rec.events) == 2


def test_101_without_upgrade_headers_and_empty_tail() -> None:
    assert run([b"HTTP/1.1 101 Switching Protocols\r\n\r\n"], upgrade=True) == [
        ("head", 101),
        ("upgrade", b""),
    ]


def test_unexpected_101_is_an_error() -> None:
    assert run(
        [b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\n"]
    ) == [("error", "unexpected 101 Switching Protocols")]


def test_extra_bytes_after_a_response_forbid_reuse_and_are_not_forwarded() -> None:
    parser, rec = response_parser()
    parser.start()
    parser.feed(OK + b"HTTP/1.1 200 OK\r\n")
    assert rec.events == [("head", 200), ("body", b"hello"), ("end", False)]
    assert parser.extra_bytes == len(b"HTTP/1.1 200 OK\r\n")


def test_unsolicited_bytes_on_an_idle_connection() -> None:
    parser, rec = response_parser()
    parser.start()
    parser.feed(OK)
    parser.feed(b"\r\n")
    assert rec.events[-1] == ("error", "unsolicited data from upstream")
    assert parser.closed


def test_start_twice_is_a_bug() -> None:
    parser, _ = response_parser()
    parser.start()
    with pytest.raises(RuntimeError):
        parser.start()


@pytest.mark.parametrize(
    ("chunks", "reason", "received"),
    [
        ([], "upstream closed the connection without responding", 0),
        ([b"HTTP/1.1 200"], "upstream closed the connection before a complete response head", 12),
        (
            [OK[:-2]],
            "upstream closed the connection before the response body was complete",
            len(OK) - 2,
        ),
    ],
)
def test_eof_too_early(chunks: list[bytes], reason: str, received: int) -> None:
    parser, rec = response_parser()
    parser.start()
    for chunk in chunks:
        parser.feed(chunk)
    parser.feed_eof()
    assert rec.events[-1] == ("error", reason)
    assert parser.bytes_received == received  # 0 means: the keep-alive race, retry is safe


@pytest.mark.parametrize(
    "data",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\nx",
        b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX: a\r\n folded\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 999 Nope\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 099 Nope\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n",
        b"RTSP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"<html>hello</html>\r\n\r\n",
    ],
)
def test_broken_responses_are_errors(data: bytes) -> None:
    events = run([data])
    assert events[-1][0] == "error", events


def test_oversized_response_head() -> None:
    parser = ResponseParser(ResponseRecorder(), max_head_bytes=100)
    rec = ResponseRecorder()
    parser = ResponseParser(rec, max_head_bytes=100)
    parser.start()
    parser.feed(b"HTTP/1.1 200 OK\r\n" + b"X: " + b"a" * 200 + b"\r\n")
    assert rec.events == [("error", "response head too large")]


@pytest.mark.parametrize("extra", [-1, 0, 1, 4])
def test_the_head_limit_counts_the_whole_head(extra: int) -> None:
    """A complete head of exactly ``max_head_bytes`` (CRLFCRLF included) passes; one byte
    more does not, whichever path takes it."""
    prefix = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nX: "
    pad = b"a" * (100 + extra - len(prefix) - 4)
    head = prefix + pad + b"\r\n\r\n"
    assert len(head) == 100 + extra
    rec = ResponseRecorder()
    parser = ResponseParser(rec, max_head_bytes=100)
    parser.start()
    parser.feed(head)
    if extra <= 0:
        assert rec.events == [("head", 200), ("end", True)]
    else:
        assert rec.events == [("error", "response head too large")]


def test_dechunk_for_http10_clients() -> None:
    data = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3\r\nabc\r\n2;e=1\r\nde\r\n0\r\nT: 1\r\n\r\n"
    )
    parser, rec = response_parser()
    parser.start(dechunk=True)
    parser.feed(data)
    assert merged(rec.events) == [("head", 200), ("body", b"abcde"), ("end", True)]
    head = rec.heads[0]
    assert head.dechunked and head.close_delimited  # the client connection must close after
    assert head.keep_alive  # the upstream one is fine


def test_leading_empty_lines_before_a_status_line_are_skipped() -> None:
    assert run([b"\r\n" + OK]) == [("head", 200), ("body", b"hello"), ("end", True)]


def test_response_head_accessors() -> None:
    parser, rec = response_parser()
    parser.start()
    parser.feed(
        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n\r\n"
    )
    head = rec.heads[0]
    assert head.status == 404 and head.version == b"1.1"
    assert head.get(b"set-cookie") == b"a=1"
    assert head.get_all(b"set-cookie") == [b"a=1", b"b=2"]
    assert head.headers == [
        (b"content-length", b"0"),
        (b"set-cookie", b"a=1"),
        (b"set-cookie", b"b=2"),
    ]


STREAM = [
    b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nwxyz\r\n0\r\n\r\n",
    b"HTTP/1.1 304 Not Modified\r\nETag: x\r\n\r\n",
]


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_any_split_of_each_response_gives_the_same_events(data: st.DataObject) -> None:
    parser, rec = response_parser()
    expected: list[tuple[object, ...]] = []
    for response in STREAM:
        expected += run([response])
        cuts = data.draw(st.lists(st.integers(min_value=0, max_value=len(response)), max_size=6))
        points = sorted(set(cuts))
        parser.start()
        for a, b in zip([0, *points], [*points, len(response)], strict=True):
            parser.feed(response[a:b])
    assert merged(rec.events) == expected


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200), st.booleans())
def test_arbitrary_bytes_never_raise(data: bytes, head_request: bool) -> None:
    run([data, data], head_request=head_request, eof=True)

"""The framing both parsers share (``lb.http.framing``): its header-field readers, and the head
and body stepping seen from both directions, which must frame the same bytes the same way."""

from __future__ import annotations

from itertools import pairwise

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lb.http.framing import content_length, cut_connection_options, keep_alive_option
from tests.unit.test_http_helpers import merged, request_parser, response_parser

# -- the header-field readers -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "length"),
    [
        (b"0", 0),
        (b"5", 5),
        (b"007", 7),
        (b"5 \t", 5),  # trailing whitespace belongs to the field, not the value
        (b"9" * 18, 10**18 - 1),
        (b"1" * 19, -1),  # longer than any body we could count
        (b"", -1),
        (b"+5", -1),
        (b"-5", -1),
        (b"5,5", -1),
        (b"5 5", -1),
        (b"0x10", -1),
        (b"1_000", -1),
        ("٣".encode(), -1),  # not ASCII digits
    ],
)
def test_content_length(value: bytes, length: int) -> None:
    assert content_length(value) == length


@given(st.binary(max_size=24))
def test_content_length_is_a_plain_decimal_count(value: bytes) -> None:
    stripped = value.rstrip(b" \t")
    plain = 0 < len(stripped) <= 18 and all(48 <= c <= 57 for c in stripped)
    assert content_length(value) == (int(stripped) if plain else -1)


@pytest.mark.parametrize(
    ("tokens", "default", "keep_alive"),
    [
        ([], True, True),
        ([], False, False),
        ([b"upgrade"], False, False),
        ([b"keep-alive"], False, True),
        ([b"close"], True, False),
        ([b"keep-alive", b"close"], True, False),  # close wins, wherever it stands
        ([b"close", b"keep-alive"], False, False),
    ],
)
def test_keep_alive_option(tokens: list[bytes], default: bool, keep_alive: bool) -> None:
    assert keep_alive_option(tokens, default) is keep_alive


def test_cut_connection_options_names_only_headers_the_head_has() -> None:
    low = b"get / http/1.1\r\nx-a: 1\r\nx-b: 2\r\nhost: h\r\nx-c: 3\r\n\r\n"
    cut = [b"x-c"]
    keep = frozenset({b"close", b"host"})
    tokens = [b"x-a", b"close", b"host", b"x-c", b"x-missing", b"x-a"]
    assert cut_connection_options(tokens, low, cut, keep)
    # x-c was cut already, x-missing is not in the head, close and host are kept.
    assert cut == [b"x-c", b"x-a"]
    assert not cut_connection_options([b"x-b"], low, [b"x-b"], keep)
    assert not cut_connection_options([b"close"], low, [], keep)


# -- one stepping, two directions ---------------------------------------------------------------

REQUEST = b"POST /u HTTP/1.1\r\nHost: h\r\n"
RESPONSE = b"HTTP/1.1 200 OK\r\n"
CHUNKED = b"Transfer-Encoding: chunked\r\n\r\n"
CHUNKS = b"3;x=y\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\nT: 1\r\n\r\n"
SIZED = b"Content-Length: 21\r\n\r\n"
PAYLOAD = b"twenty-one bytes long"


def _request_events(chunks: list[bytes]) -> tuple[list[tuple[object, ...]], int]:
    parser, rec = request_parser(auto_resume=False)
    for chunk in chunks:
        parser.feed(chunk)
    head = parser.head
    return merged(rec.events), -1 if head is None else head.body_bytes


def _response_events(chunks: list[bytes]) -> tuple[list[tuple[object, ...]], int]:
    parser, rec = response_parser()
    parser.start()
    for chunk in chunks:
        parser.feed(chunk)
    head = parser.head
    return merged(rec.events), -1 if head is None else head.body_bytes


def _cut(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    return [data[a:b] for a, b in pairwise(points)]


@given(st.sampled_from([(CHUNKED, CHUNKS), (SIZED, PAYLOAD)]), st.lists(st.integers(0, 200)))
def test_both_directions_frame_a_body_alike_however_it_is_cut(
    framing: tuple[bytes, bytes], cuts: list[int]
) -> None:
    fields, body = framing
    request, request_bytes = _request_events(_cut(REQUEST + fields + body, cuts))
    response, response_bytes = _response_events(_cut(RESPONSE + fields + body, cuts))
    assert request[1:] == [("body", body), ("end",)]
    assert response[1:] == [("body", body), ("end", True)]
    assert request_bytes == response_bytes == len(body)


def test_both_directions_stop_exactly_where_the_message_ends() -> None:
    # What follows a request waits for resume(); what follows a response is an error.
    request, _ = _request_events([REQUEST + CHUNKED + CHUNKS + b"GET / HTTP/1.1\r\n"])
    assert request[-2:] == [("body", CHUNKS), ("end",)]
    parser, rec = response_parser()
    parser.start()
    parser.feed(RESPONSE + SIZED + PAYLOAD + b"HTTP")
    assert merged(rec.events)[-2:] == [("body", PAYLOAD), ("end", False)]
    assert parser.extra_bytes == 4 and parser.closed


def test_both_directions_refuse_garbage_before_the_head_ends() -> None:
    garbage = b"HTTP/1.1 200 OK\r\nBad Name: x\r\n"
    request, _ = _request_events([b"GET / HTTP/1.1\r\nBad Name: x\r\n"])
    response, _ = _response_events([garbage])
    assert request == [("error", 400, "Invalid header token")]
    assert response == [("error", "invalid response head: Invalid header token")]


def test_both_directions_refuse_a_bad_chunk_each_in_its_own_words() -> None:
    bad = CHUNKED + b"3\r\nabcX"
    request, _ = _request_events([REQUEST + bad])
    response, _ = _response_events([RESPONSE + bad])
    assert request[-1] == ("error", 400, "chunk data not followed by CRLF")
    reason = "invalid chunked response body: chunk data not followed by CRLF"
    assert response[-1] == ("error", reason)


# -- body bytes passed on as they are (the shared read buffer of lb.proxy.exchange) -------------


def _relay(pieces: list[bytes]) -> tuple[list[object], int]:
    """Feeds ``pieces`` as ``HttpUpstreamProtocol.buffer_updated`` does: a piece that
    ``passes`` goes on as a memoryview through ``pass_on``, any other is fed as bytes."""
    parser, rec = response_parser()
    parser.start()
    for piece in pieces:
        if parser.passes(len(piece)):
            parser.pass_on(memoryview(piece), len(piece))
        else:
            parser.feed(piece)
    return merged(rec.events), parser.head.body_bytes if parser.head else -1


_CL_RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 300\r\n\r\n" + bytes(range(256)) + b"x" * 44
_CHUNKED_RESPONSE = (
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"100\r\n" + bytes(range(256)) + b"\r\n2c;ext=1\r\n" + b"y" * 44 + b"\r\n0\r\nT: v\r\n\r\n"
)


@given(st.sampled_from([_CL_RESPONSE, _CHUNKED_RESPONSE]), st.lists(st.integers(1, 400)))
def test_passing_body_bytes_on_frames_like_feeding_them(response: bytes, cuts: list[int]) -> None:
    points = sorted({c for c in cuts if c < len(response)})
    pieces = [response[a:b] for a, b in pairwise([0, *points, len(response)])]
    parser, rec = response_parser()
    parser.start()
    parser.feed(response)
    assert _relay(pieces) == (merged(rec.events), parser.head.body_bytes if parser.head else -1)


def test_only_body_bytes_that_need_no_framing_pass() -> None:
    parser, _ = response_parser()
    parser.start()
    assert not parser.passes(1)  # a head is expected
    parser.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n")
    assert parser.passes(10) and not parser.passes(11)  # more than the body: fed
    parser, _ = response_parser()
    parser.start()
    parser.feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\na\r\n")
    assert parser.passes(9) and not parser.passes(10)  # the chunk's CRLF must be framed

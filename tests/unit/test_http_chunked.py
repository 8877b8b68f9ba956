"""The chunked framer: exact end offsets, strictness, limits, any split."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lb.http import ChunkedFramer, FramingError
from lb.http.chunked import MAX_CHUNK_SIZE


def frame(data: bytes, framer: ChunkedFramer | None = None) -> tuple[int, bytes]:
    framer = framer or ChunkedFramer()
    out: list[bytes] = []
    end = framer.consume(data, 0, out)
    return end, b"".join(out)


def encode(payloads: list[bytes], trailers: bytes = b"") -> bytes:
    return (
        b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in payloads if p)
        + b"0\r\n"
        + trailers
        + b"\r\n"
    )


def test_end_offset_is_exact() -> None:
    body = encode([b"hello", b" world"])
    framer = ChunkedFramer()
    end, payload = frame(body + b"GET / HTTP/1.1\r\n", framer)
    assert end == len(body) and framer.done
    assert payload == b"hello world"
    assert framer.payload_bytes == 11


def test_extensions_trailers_and_uppercase_hex() -> None:
    body = b'A;name=value;q="quoted; still"\r\n0123456789\r\n0\r\nX-Sum: 1\r\nY: 2\r\n\r\n'
    end, payload = frame(body)
    assert end == len(body) and payload == b"0123456789"


def test_consume_after_done_consumes_nothing() -> None:
    framer = ChunkedFramer()
    framer.consume(b"0\r\n\r\n")
    assert framer.consume(b"more", 0) == 0


@pytest.mark.parametrize(
    "data",
    [
        b"x\r\n",
        b"0x1\r\na\r\n",
        b"+1\r\na\r\n",
        b"-1\r\n",
        b"1_0\r\n",
        b" 1\r\n",
        b"1 \r\n",
        b"1\n",
        b"1\r\r\n",
        b"\r\n",
        b"11111111111111111\r\n",
        b"1;\x00\r\n",
        b"1\r\nab\r\n",
        b"1\r\na\n",
        b"1\r\naXY",
        b"0\r\nno colon\r\n\r\n",
        b"0\r\n: empty name\r\n\r\n",
        b"0\r\nBad Name: 1\r\n\r\n",
        b"0\r\nX: \x01\r\n\r\n",
        b"0\r\n folded\r\n\r\n",
        b"0\r\nX: 1\n\r\n",
    ],
)
def test_malformed_chunked_bodies(data: bytes) -> None:
    with pytest.raises(FramingError) as info:
        ChunkedFramer().consume(data)
    assert info.value.status == 400


def test_payload_limit_is_413() -> None:
    framer = ChunkedFramer(max_payload=5)
    framer.consume(b"3\r\nabc\r\n")
    with pytest.raises(FramingError) as info:
        framer.consume(b"3\r\ndef\r\n")
    assert info.value.status == 413


def test_size_line_and_trailer_limits() -> None:
    with pytest.raises(FramingError):
        ChunkedFramer(max_line=10).consume(b"1;" + b"x" * 20)
    framer = ChunkedFramer(max_line=10)
    framer.consume(b"1;xxxx")
    with pytest.raises(FramingError):
        framer.consume(b"xxxxxxxx")
    with pytest.raises(FramingError):
        ChunkedFramer(max_trailer=10).consume(b"0\r\nX: 1\r\nY: 22\r\nZ: 3\r\n")


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.binary(max_size=50), max_size=8),
    st.sampled_from([b"", b"T: 1\r\n", b"A: b\r\nC: d\r\n"]),
    st.binary(max_size=10),
    st.lists(st.integers(min_value=0, max_value=600), max_size=10),
)
def test_any_split_finds_the_same_end_and_payload(
    payloads: list[bytes], trailers: bytes, tail: bytes, cuts: list[int]
) -> None:
    body = encode(payloads, trailers)
    data = body + tail
    points = sorted({c for c in cuts if c <= len(data)})
    framer = ChunkedFramer()
    out: list[bytes] = []
    consumed = 0
    for a, b in zip([0, *points], [*points, len(data)], strict=True):
        piece = data[a:b]
        end = framer.consume(piece, 0, out)
        consumed += end
        if framer.done:
            break
        assert end == len(piece)
    assert framer.done
    assert consumed == len(body)
    assert b"".join(out) == b"".join(payloads)


@pytest.mark.parametrize("size", [b"8000000000000000", b"FFFFFFFFFFFFFFFF", b"10000000000000"])
def test_a_chunk_size_beyond_max_chunk_size_is_refused(size: bytes) -> None:
    with pytest.raises(FramingError, match="chunk size too large"):
        frame(size + b"\r\nabc")


def test_the_largest_chunk_size_is_taken() -> None:
    framer = ChunkedFramer()
    _, payload = frame(b"%x\r\nabc" % MAX_CHUNK_SIZE, framer)
    assert payload == b"abc" and not framer.done

"""The compiled response scan takes only heads llhttp takes: a differential test against
httptools' ``HttpResponseParser``.

A response head the scan takes (``lb.http._speedups.scan_response``) never reaches llhttp, so
every head it accepts must be one llhttp accepts, and every head llhttp refuses must be declined
by the scan (the general path then hands it to llhttp, which says what is wrong). Heads are
generated from a grammar of status lines and header lines with odd bytes in every place llhttp
looks at (status digits, reason phrase, names, values, line ends, folding), and by changing or
inserting one byte anywhere in real backends' heads.
"""

from __future__ import annotations

import httptools
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from lb import _compiled
from lb.http._llhttp import Quiet
from tests.unit.test_http_helpers import python_only, response_parser

pytestmark = pytest.mark.skipif(
    not _compiled.speedups_loaded(), reason="lb.http._speedups is not built"
)


def scan(raw: bytes, head_request: bool = False) -> tuple[object, ...] | None:
    from lb.http._speedups import scan_response

    return scan_response(raw, head_request)  # type: ignore[no-any-return]


def llhttp_takes(raw: bytes) -> bool:
    parser = httptools.HttpResponseParser(Quiet())
    try:
        parser.feed_data(raw)
    except (httptools.HttpParserError, httptools.HttpParserUpgrade):
        return False
    return True


def check(raw: bytes) -> None:
    """What the parser would hand the scan: one complete head, CRLFCRLF once, at its end."""
    if raw.find(b"\r\n\r\n") != len(raw) - 4 or raw[:1] in (b"\r", b"\n"):
        return
    for head_request in (False, True):
        if scan(raw, head_request) is not None:
            assert llhttp_takes(raw), f"the scan took a head llhttp refuses: {raw!r}"


ODD = [b"\x00", b"\x01", b"\t", b"\r", b"\n", b" ", b"\x7f", b"\x80", b"\xff", b":", b'"', b"("]
piece = st.one_of(
    st.sampled_from([b"a", b"OK", b"1", b"x-y", b"chunked", b"close", b"keep-alive", b""]),
    st.sampled_from(ODD),
    st.binary(max_size=3),
)
text = st.lists(piece, max_size=4).map(b"".join)

NAMES = [
    b"Content-Length",
    b"content-length",
    b"Transfer-Encoding",
    b"Connection",
    b"Keep-Alive",
    b"Proxy-Connection",
    b"Upgrade",
    b"Server",
    b"Set-Cookie",
    b"X-Custom",
]
name = st.one_of(
    st.sampled_from(NAMES), text, st.tuples(st.sampled_from(NAMES), text).map(b"".join)
)
value = st.one_of(
    st.sampled_from([b"5", b"0", b" 12 ", b"\t7", b"chunked", b"close", b"keep-alive", b"x"]),
    text,
)
line_end = st.sampled_from([b"\r\n", b"\r\n", b"\r\n", b"\n", b"\r", b"\r\n ", b"\r\n\t"])
header = st.tuples(name, st.sampled_from([b":", b": ", b":\t", b" :", b""]), value, line_end).map(
    b"".join
)
status_line = st.tuples(
    st.sampled_from([b"HTTP/1.1 ", b"HTTP/1.0 ", b"HTTP/1.1", b"HTTP/2.0 ", b"http/1.1 "]),
    st.sampled_from([b"200", b"204", b"304", b"404", b"599", b"600", b"2000", b"20", b"2x0"]),
    st.sampled_from([b"", b" ", b" OK", b" Not Found", b"\t"]),
    text,
    line_end,
).map(b"".join)
heads = st.tuples(status_line, st.lists(header, max_size=6)).map(
    lambda t: t[0] + b"".join(t[1]) + b"\r\n"
)


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(heads)
@example(b"HTTP/1.1 200 OK\r\nX: a\x7fb\r\n\r\n")  # DEL in a value
@example(b"HTTP/1.1 200 OK\r\nX: a\rb\r\nContent-Length: 0\r\n\r\n")  # a bare CR
@example(b"HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n")  # obs-fold
@example(b"HTTP/1.1 200 OK\r\nX y: a\r\n\r\n")  # not a token
@example(b"HTTP/1.1 200 OK\nX: a\r\n\r\n")  # a bare LF ending the status line
@example(b"HTTP/1.1 2000 OK\r\n\r\n")
@example(b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n")
def test_generated_heads_the_scan_takes_are_heads_llhttp_takes(raw: bytes) -> None:
    check(raw)


TEMPLATES = [
    # nginx (the benchmark's backend), a chunked answer, a bare one from a small server
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Wed, 25 Nov 2026 18:50:00 GMT\r\n"
    b"Content-Type: text/plain\r\nContent-Length: 33\r\nConnection: keep-alive\r\n\r\n",
    b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\nSet-Cookie: a=1\r\n\r\n",
    b"HTTP/1.0 204\r\nKeep-Alive: timeout=5\r\nConnection: close\r\n\r\n",
]


@settings(max_examples=4000, deadline=None)
@given(
    template=st.sampled_from(TEMPLATES),
    at=st.integers(0, 200),
    byte=st.integers(0, 255),
    insert=st.booleans(),
)
@example(template=TEMPLATES[0], at=30, byte=0, insert=True)  # NUL in a value
@example(template=TEMPLATES[0], at=30, byte=127, insert=True)  # DEL in a value
@example(template=TEMPLATES[0], at=12, byte=1, insert=True)  # a CTL in the reason
@example(template=TEMPLATES[0], at=17, byte=32, insert=True)  # obs-fold
@example(template=TEMPLATES[0], at=23, byte=32, insert=True)  # SP before the colon
def test_one_byte_off_real_heads_the_scan_takes_llhttp_takes(
    template: bytes, at: int, byte: int, insert: bool
) -> None:
    at %= len(template) - 4
    check(template[:at] + bytes([byte]) + template[at + (0 if insert else 1) :])


REFUSED = [
    b"HTTP/1.1 200 OK\r\nX: a\x7fb\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nX: a\x00b\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nX: a\rb\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nX y: ab\r\n\r\n",
    b'HTTP/1.1 200 OK\r\nX"y: ab\r\n\r\n',
    b"HTTP/1.1 200 OK\r\nX : ab\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n",
    b"HTTP/1.1 2000 OK\r\n\r\n",
]


@pytest.mark.parametrize("raw", REFUSED)
def test_heads_llhttp_refuses_the_scan_declines(raw: bytes) -> None:
    assert not llhttp_takes(raw)
    assert scan(raw) is None


def _events(raw: bytes) -> tuple[list[object], list[object]]:
    parser, rec = response_parser()
    parser.start()
    parser.feed(raw)
    return rec.events, rec.heads


@pytest.mark.parametrize("raw", REFUSED)
def test_heads_llhttp_refuses_are_errors_compiled_and_not(raw: bytes) -> None:
    """Through the whole parser: an error (a 502) either way, never a head."""
    events, heads = _events(raw + b"hello")
    with python_only():
        pure_events, pure_heads = _events(raw + b"hello")
    assert not heads and not pure_heads
    assert events[-1][0] == "error", events  # type: ignore[index]
    assert events == pure_events


def test_real_backends_heads_are_taken() -> None:
    """What nginx and the like send is still taken: the fast path stays the common path."""
    for raw in TEMPLATES:
        assert scan(raw) is not None, raw
        assert llhttp_takes(raw)
    assert scan(b"HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n") is not None  # no reason phrase
    assert scan(b"HTTP/1.1 200 OK\r\nX-Empty:\r\nContent-Length:\t5 \r\n\r\n") is not None


@given(st.binary(max_size=16), st.integers(0, 2**64 - 1))
@example(b"abc", 0)
@example(b"abc", 2**48 - 1)
@example(b"abc", 2**48)
def test_request_id_is_the_format_it_replaces(prefix: bytes, n: int) -> None:
    from lb.http._speedups import request_id

    assert request_id(prefix, n) == b"%s%012x" % (prefix, n)

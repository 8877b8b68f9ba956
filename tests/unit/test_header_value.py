"""``_speedups.header_value`` (the compiled ``RequestHead.get``) gives what ``raw_values``
gives first, for any head: names that are prefixes or suffixes of others, repeated headers,
values with spaces and tabs, empty values, any letter case."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lb.http import _fast
from lb.http.heads import raw_values

pytestmark = pytest.mark.skipif(
    _fast.HEADER_VALUE is None, reason="lb.http._speedups is not loaded (LB_NO_EXTENSIONS)"
)

NAMES = [b"x-user", b"X-User", b"xx-user", b"x-user2", b"x-use", b"host", b"cookie", b"a"]
VALUES = st.binary(min_size=0, max_size=12).map(
    lambda b: bytes(c for c in b if c not in (10, 13)) or b""
)
LINE = st.tuples(st.sampled_from(NAMES), st.sampled_from([b"", b" ", b"\t", b" \t "]), VALUES)


def head(lines: list[tuple[bytes, bytes, bytes]]) -> bytes:
    return (
        b"GET /x-user: HTTP/1.1\r\n"
        + b"".join(n + b":" + sp + v + b"\r\n" for n, sp, v in lines)
        + b"\r\n"
    )


@given(st.lists(LINE, max_size=8), st.sampled_from([n.lower() for n in NAMES] + [b"nope"]))
def test_header_value_is_raw_values_first(
    lines: list[tuple[bytes, bytes, bytes]], name: bytes
) -> None:
    assert _fast.HEADER_VALUE is not None
    raw = head(lines)
    low = raw.lower()
    start = raw.index(b"\r\n")
    want = raw_values(raw, low, name, start)
    assert _fast.HEADER_VALUE(raw, low, start, name) == (want[0] if want else None)


def test_the_start_line_is_not_a_header() -> None:
    assert _fast.HEADER_VALUE is not None
    raw = b"GET /\r\nx-user:1 HTTP/1.1\r\nHost: a\r\n\r\n"
    low = raw.lower()
    assert _fast.HEADER_VALUE(raw, low, raw.index(b"\r\n", 7), b"x-user") is None
    long = b"n" * 300
    raw = b"GET / HTTP/1.1\r\n" + long + b": v\r\n\r\n"
    assert _fast.HEADER_VALUE(raw, raw.lower(), 14, long) == b"v"  # the general path

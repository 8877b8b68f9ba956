"""The PROXY protocol parser and builder (``lb.proxyproto``): tables of accepted and refused
headers, byte-at-a-time feeding, and round trips of generated addresses."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lb.proxyproto import (
    V2_SIGNATURE,
    ProxyHeader,
    ProxyProtocolError,
    build_v1,
    build_v2,
    parse,
)

ACCEPTED = [
    (
        b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\nGET /",
        ProxyHeader(1, 45, ("192.0.2.1", 56324), ("198.51.100.2", 443)),
    ),
    (
        b"PROXY TCP6 2001:db8::1 2001:db8::2 1 65535\r\n",
        ProxyHeader(1, 44, ("2001:db8::1", 1), ("2001:db8::2", 65535)),
    ),
    (b"PROXY UNKNOWN\r\n", ProxyHeader(1, 15, None, None)),
    (b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\nrest", ProxyHeader(1, 35, None, None)),
    (
        V2_SIGNATURE
        + b"\x21\x11\x00\x0c"
        + bytes([10, 0, 0, 1, 10, 0, 0, 2])
        + b"\x04\xd2\x01\xbb",
        ProxyHeader(2, 28, ("10.0.0.1", 1234), ("10.0.0.2", 443)),
    ),
    # LOCAL (the balancer's own health check): no address
    (V2_SIGNATURE + b"\x20\x00\x00\x00", ProxyHeader(2, 16, None, None)),
    # a TLV after the addresses (a NOOP of 2 bytes) is skipped
    (
        V2_SIGNATURE
        + b"\x21\x11\x00\x11"
        + bytes([127, 0, 0, 1, 127, 0, 0, 2])
        + b"\x00\x50\x00\x51"
        + b"\x04\x00\x02ab",
        ProxyHeader(2, 33, ("127.0.0.1", 80), ("127.0.0.2", 81)),
    ),
]


@pytest.mark.parametrize(("data", "header"), ACCEPTED)
def test_accepted(data: bytes, header: ProxyHeader) -> None:
    assert parse(data) == header


@pytest.mark.parametrize(("data", "header"), ACCEPTED)
def test_needs_the_whole_header(data: bytes, header: ProxyHeader) -> None:
    """Every proper prefix of a header asks for more bytes; the whole one parses."""
    for n in range(header.length):
        assert parse(data[:n]) is None, n
    assert parse(data[: header.length]) == header


REFUSED = [
    (b"GET / HTTP/1.1\r\n", "missing"),
    (b"\x16\x03\x01\x02\x00", "missing"),  # a TLS ClientHello
    (b"PROXX TCP4", "missing"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n", "invalid"),
    (b"PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n", "invalid"),  # two spaces
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n", "invalid"),  # leading zero
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n", "invalid"),
    (b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n", "invalid"),  # family mismatch
    (b"PROXY TCP6 1.2.3.4 ::1 1 2\r\n", "invalid"),
    (b"PROXY TCP4 1.2.3.256 5.6.7.8 1 2\r\n", "invalid"),
    (b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n", "invalid"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", "invalid"),  # bare LF
    (b"PROXY " + b"A" * 120, "invalid"),  # no CRLF within 107 bytes
    (V2_SIGNATURE + b"\x11\x11\x00\x0c" + bytes(12), "invalid"),  # version 1 in v2
    (V2_SIGNATURE + b"\x22\x11\x00\x0c" + bytes(12), "invalid"),  # command 2
    (V2_SIGNATURE + b"\x21\x11\x00\x08" + bytes(8), "invalid"),  # addresses cut short
    (V2_SIGNATURE + b"\x21\x41\x00\x00", "invalid"),  # unknown family
    (V2_SIGNATURE + b"\x21\x11\x00\x0e" + bytes(12) + b"\x04\x00", "invalid"),  # short TLV
    (V2_SIGNATURE + b"\x21\x11\x00\x0f" + bytes(12) + b"\x04\x00\x09", "invalid"),  # TLV overrun
    (V2_SIGNATURE + b"\x21\x11\xff\xff", "too_long"),
    (b"\r\n\r\n\x00\r\nQUIX\n", "missing"),
]


@pytest.mark.parametrize(("data", "reason"), REFUSED)
def test_refused(data: bytes, reason: str) -> None:
    with pytest.raises(ProxyProtocolError) as err:
        parse(data)
    assert err.value.reason == reason


def test_empty_needs_more() -> None:
    assert parse(b"") is None


ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).map(str)
ports = st.integers(0, 65535)


@given(st.one_of(st.tuples(ipv4, ipv4), st.tuples(ipv6, ipv6)), ports, ports, st.binary())
def test_round_trip(ips: tuple[str, str], sport: int, dport: int, rest: bytes) -> None:
    src, dst = (ips[0], sport), (ips[1], dport)
    for version, build in ((1, build_v1), (2, build_v2)):
        header = build(src, dst)
        got = parse(header + rest)
        assert got == ProxyHeader(version, len(header), src, dst)


@given(ipv4, ipv6, ports, ports)
def test_mixed_families_carry_no_address(a: str, b: str, sport: int, dport: int) -> None:
    for build in (build_v1, build_v2):
        got = parse(build((a, sport), (b, dport)))
        assert got is not None and got.source is None


@given(st.binary(max_size=64))
def test_arbitrary_bytes_never_crash(data: bytes) -> None:
    try:
        got = parse(data)
    except ProxyProtocolError:
        return
    if got is not None:
        assert 0 < got.length <= len(data)
        if got.source is not None:
            ipaddress.ip_address(got.source[0])

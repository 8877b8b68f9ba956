"""The PROXY protocol (HAProxy's, versions 1 and 2): parse a header, build one.

Theory of operation
-------------------
An L4 balancer in front of lb (a cloud NLB, HAProxy in tcp mode) opens its own connection to
lb, so lb's peer is the balancer. With the PROXY protocol the balancer writes one header first,
before any byte of the client's (and before TLS), that carries the client's address. lb reads
it, and from then on that address is the client's everywhere (X-Forwarded-For, ``source_ip``
hashing, the access log). lb also writes such a header to backends that expect one
(``send_proxy``).

:func:`parse` takes the bytes received so far and answers one of three things: ``None`` (not
enough bytes yet to decide), a :class:`ProxyHeader` (its ``length`` says how many bytes it
took; what follows belongs to the client), or :class:`ProxyProtocolError` with a ``reason``
for the counters: ``missing`` (the bytes are not a PROXY header at all), ``invalid`` (it
starts as one but breaks the specification) or ``too_long``. It is strict: one space between
v1 fields, addresses of the family named, ports without leading zeros, the v2 signature and
version exact, TLVs that fit their length. The UNKNOWN (v1) and LOCAL (v2) forms carry no
address (the balancer's own health checks): ``source`` is ``None`` and the peer's address
stands.

Pure: bytes in, values out; no sockets, no asyncio. The specification:
https://www.haproxy.org/download/2.6/doc/proxy-protocol.txt
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

V1_PREFIX = b"PROXY "
V1_MAX = 107  # the whole v1 line, CRLF included
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V2_HEADER = 16  # signature, version/command, family/protocol, length
V2_MAX_BODY = 2048  # addresses and TLVs; more is refused (HAProxy's own limit is similar)

Address = tuple[str, int]

#: Why a listener closed a connection at the PROXY check (a metric label): the peer is not
#: in ``trusted_proxies``; it sent no header, or a bad one, or too long a one; or too late.
REJECT_REASONS = ("untrusted", "missing", "invalid", "too_long", "timeout")

# v2 family/protocol byte -> (IP version, address block length); 0x00 is UNSPEC.
_V2_FAMILIES = {0x11: (4, 12), 0x12: (4, 12), 0x21: (6, 36), 0x22: (6, 36)}
_V2_UNIX = (0x31, 0x32)  # AF_UNIX stream/dgram: 216 bytes of paths, no IP to carry


class ProxyProtocolError(ValueError):
    """The bytes are not an acceptable PROXY header; ``reason`` is a metric label."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class ProxyHeader:
    version: int  # 1 or 2
    length: int  # bytes the header took
    source: Address | None  # the client; None for UNKNOWN / LOCAL / unix
    destination: Address | None


def parse(data: bytes) -> ProxyHeader | None:
    """The header at the start of ``data``, ``None`` if more bytes are needed, or
    :class:`ProxyProtocolError`."""
    if data[:1] == b"P":
        if not V1_PREFIX.startswith(data[:6]):
            raise ProxyProtocolError("missing", "the connection did not start with a PROXY header")
        return _parse_v1(data)
    if data[:1] == b"\r":
        if not V2_SIGNATURE.startswith(data[:12]):
            raise ProxyProtocolError("missing", "the connection did not start with a PROXY header")
        return _parse_v2(data)
    if not data:
        return None
    raise ProxyProtocolError("missing", "the connection did not start with a PROXY header")


def _parse_v1(data: bytes) -> ProxyHeader | None:
    end = data.find(b"\r\n", 0, V1_MAX)
    if end < 0:
        if len(data) >= V1_MAX or b"\n" in data[:V1_MAX]:
            why = "no CRLF within 107 bytes" if len(data) >= V1_MAX else "a bare LF"
            raise ProxyProtocolError("invalid", f"v1: {why}")
        return None
    line = data[:end]
    try:
        text = line.decode("ascii")
    except UnicodeDecodeError:
        raise ProxyProtocolError("invalid", "v1: not ASCII") from None
    parts = text.split(" ")
    if len(parts) >= 2 and parts[1] == "UNKNOWN":
        return ProxyHeader(1, end + 2, None, None)  # the rest of the line is ignored
    if len(parts) != 6:
        raise ProxyProtocolError("invalid", f"v1: expected 6 fields, got {len(parts)}")
    _, proto, src, dst, sport, dport = parts
    if proto not in ("TCP4", "TCP6"):
        raise ProxyProtocolError("invalid", f"v1: unknown protocol {proto!r}")
    want = 4 if proto == "TCP4" else 6
    return ProxyHeader(
        1,
        end + 2,
        (_v1_ip(src, want), _v1_port(sport)),
        (_v1_ip(dst, want), _v1_port(dport)),
    )


def _v1_ip(text: str, version: int) -> str:
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        raise ProxyProtocolError("invalid", f"v1: {text!r} is not an IP address") from None
    if ip.version != version:
        raise ProxyProtocolError("invalid", f"v1: {text!r} is not an IPv{version} address")
    return str(ip)


def _v1_port(text: str) -> int:
    if not text.isdigit() or not text.isascii() or (len(text) > 1 and text[0] == "0"):
        raise ProxyProtocolError("invalid", f"v1: {text!r} is not a port")
    port = int(text)
    if port > 65535:
        raise ProxyProtocolError("invalid", f"v1: {text!r} is not a port")
    return port


def _parse_v2(data: bytes) -> ProxyHeader | None:
    if len(data) < V2_HEADER:
        return None
    ver_cmd, fam, length = data[12], data[13], int.from_bytes(data[14:16], "big")
    if ver_cmd >> 4 != 2:
        raise ProxyProtocolError("invalid", f"v2: version {ver_cmd >> 4}, expected 2")
    command = ver_cmd & 0x0F
    if command not in (0, 1):
        raise ProxyProtocolError("invalid", f"v2: unknown command {command}")
    if length > V2_MAX_BODY:
        raise ProxyProtocolError("too_long", f"v2: {length} bytes of addresses and TLVs")
    total = V2_HEADER + length
    if len(data) < total:
        return None
    body = data[V2_HEADER:total]
    if fam in _V2_FAMILIES:
        version, size = _V2_FAMILIES[fam]
    elif fam in _V2_UNIX:
        version, size = 0, 216
    elif fam == 0x00:
        version, size = 0, 0
    else:
        raise ProxyProtocolError("invalid", f"v2: unknown family/protocol 0x{fam:02x}")
    if length < size:
        raise ProxyProtocolError("invalid", f"v2: {length} bytes, the addresses need {size}")
    _check_tlvs(body[size:])
    if command == 0 or version == 0:
        return ProxyHeader(2, total, None, None)  # LOCAL, UNSPEC or unix: no IP carried
    n = 4 if version == 4 else 16
    src = str(ipaddress.ip_address(body[:n]))
    dst = str(ipaddress.ip_address(body[n : 2 * n]))
    sport, dport = struct.unpack_from("!HH", body, 2 * n)
    return ProxyHeader(2, total, (src, sport), (dst, dport))


def _check_tlvs(tlvs: bytes) -> None:
    i = 0
    while i < len(tlvs):
        if len(tlvs) - i < 3:
            raise ProxyProtocolError("invalid", "v2: a TLV cut short")
        size = int.from_bytes(tlvs[i + 1 : i + 3], "big")
        i += 3 + size
        if i > len(tlvs):
            raise ProxyProtocolError("invalid", "v2: a TLV longer than the header")


# -- building -------------------------------------------------------------------------------


def build_v1(source: Address, destination: Address) -> bytes:
    """``PROXY TCP4 src dst sport dport\\r\\n`` (TCP6 for IPv6; mixed families are sent as
    UNKNOWN, as the specification asks)."""
    s, d = ipaddress.ip_address(source[0]), ipaddress.ip_address(destination[0])
    if s.version != d.version:
        return b"PROXY UNKNOWN\r\n"
    proto = "TCP4" if s.version == 4 else "TCP6"
    return f"PROXY {proto} {s} {d} {source[1]} {destination[1]}\r\n".encode()


def build_v2(source: Address | None, destination: Address | None) -> bytes:
    """The binary header, PROXY command over TCP; ``source`` None gives a LOCAL header."""
    if source is None or destination is None:
        return V2_SIGNATURE + b"\x20\x00\x00\x00"
    s, d = ipaddress.ip_address(source[0]), ipaddress.ip_address(destination[0])
    if s.version != d.version:
        return V2_SIGNATURE + b"\x21\x00\x00\x00"  # PROXY, UNSPEC: the receiver uses the peer
    fam, size = (0x11, 12) if s.version == 4 else (0x21, 36)
    addresses = s.packed + d.packed + struct.pack("!HH", source[1], destination[1])
    return V2_SIGNATURE + bytes((0x21, fam)) + size.to_bytes(2, "big") + addresses


def build(version: str, source: Address, destination: Address) -> bytes:
    """``version``: ``"v1"`` or ``"v2"`` (a pool's ``send_proxy``)."""
    return build_v1(source, destination) if version == "v1" else build_v2(source, destination)

from typing import Any

def scan_request(
    raw: bytes,
    max_body: int,
    max_headers: int = -1,
    max_line: int = -1,
    max_header_bytes: int = -1,
) -> tuple[Any, ...] | None: ...
def scan_response(
    data: bytes, head_request: bool, max_head: int = -1
) -> tuple[Any, ...] | None: ...
def upstream_head(
    raw: bytes,
    low: bytes,
    line_end: int,
    cut: tuple[bytes, ...],
    v11: bool,
    host: bytes | None,
    client_ip: bytes,
    proto: bytes,
    rid: bytes | None,
    via: bytes | None,
) -> bytes | None: ...
def request_id(prefix: bytes, n: int) -> bytes: ...
def response_out(raw: bytes, rid: bytes, cookie: bytes, hsts: bytes, body: bytes) -> bytes: ...
def response_close(raw: bytes, conn_at: int, rid: bytes, lines: bytes, body: bytes) -> bytes: ...
def header_value(raw: bytes, low: bytes, start: int, name: bytes) -> bytes | None: ...

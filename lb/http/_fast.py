"""Where the parsers get the compiled scan of common heads from, if it is there.

``SCAN_REQUEST``, ``SCAN_RESPONSE``, ``UPSTREAM_HEAD``, ``REQUEST_ID``, ``RESPONSE_OUT``,
``RESPONSE_CLOSE`` and ``HEADER_VALUE`` are :mod:`lb.http._speedups`' functions, or ``None`` when
``lb._compiled.load_speedups`` did not load it (not built, or ``LB_NO_EXTENSIONS`` on). The
parsers behave identically either way; the extension only takes the common heads faster. What
runs compiled, and why, is ``lb._compiled``'s to say.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lb._compiled import load_speedups

ScanRequest = Callable[[bytes, int, int, int, int], "tuple[Any, ...] | None"]
ScanResponse = Callable[[bytes, bool, int], "tuple[Any, ...] | None"]
UpstreamHead = Callable[
    [bytes, bytes, int, "tuple[bytes, ...]", bool, "bytes | None", bytes, bytes, "bytes | None",
     "bytes | None"],
    "bytes | None",
]  # fmt: skip

_speedups = load_speedups()
SCAN_REQUEST: ScanRequest | None = None if _speedups is None else _speedups.scan_request
SCAN_RESPONSE: ScanResponse | None = None if _speedups is None else _speedups.scan_response
UPSTREAM_HEAD: UpstreamHead | None = None if _speedups is None else _speedups.upstream_head
REQUEST_ID: Callable[[bytes, int], bytes] | None = (
    None if _speedups is None else _speedups.request_id
)
RESPONSE_OUT: Callable[[bytes, bytes, bytes, bytes, bytes], bytes] | None = (
    None if _speedups is None else _speedups.response_out
)
RESPONSE_CLOSE: Callable[[bytes, int, bytes, bytes, bytes], bytes] | None = (
    None if _speedups is None else _speedups.response_close
)
HEADER_VALUE: Callable[[bytes, bytes, int, bytes], bytes | None] | None = (
    None if _speedups is None else _speedups.header_value
)

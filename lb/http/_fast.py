"""Where the parsers get the compiled fast path from, if it is there.

``SCAN_REQUEST``, ``SCAN_RESPONSE`` and ``UPSTREAM_HEAD`` are :mod:`lb.http._speedups`'
functions, or ``None`` when the extension was not built (no C compiler) or
``LB_NO_EXTENSIONS`` is set to anything but ``""``/``0``. The parsers behave identically either
way; the extension only takes the common heads faster.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

ScanRequest = Callable[[bytes, int], "tuple[Any, ...] | None"]
ScanResponse = Callable[[bytes, bool], "tuple[Any, ...] | None"]
UpstreamHead = Callable[
    [bytes, bytes, int, "tuple[bytes, ...]", bool, "bytes | None", bytes, bytes, "bytes | None",
     "bytes | None"],
    "bytes | None",
]  # fmt: skip

SCAN_REQUEST: ScanRequest | None = None
SCAN_RESPONSE: ScanResponse | None = None
UPSTREAM_HEAD: UpstreamHead | None = None

if os.environ.get("LB_NO_EXTENSIONS", "") in ("", "0"):
    try:
        from lb.http._speedups import scan_request, scan_response, upstream_head
    except ImportError:
        pass
    else:
        SCAN_REQUEST = scan_request
        SCAN_RESPONSE = scan_response
        UPSTREAM_HEAD = upstream_head


def compiled() -> bool:
    """The compiled fast path is in use."""
    return SCAN_REQUEST is not None

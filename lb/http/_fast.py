"""Where the parsers get the compiled fast path from, if it is there, and which of the L7
modules run compiled.

``SCAN_REQUEST``, ``SCAN_RESPONSE`` and ``UPSTREAM_HEAD`` are :mod:`lb.http._speedups`'
functions, or ``None`` when the extension was not built (no C compiler) or
``LB_NO_EXTENSIONS`` is set to anything but ``""``/``0``. The parsers behave identically either
way; the extension only takes the common heads faster.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lb._source_only import COMPILED_MODULES

ScanRequest = Callable[[bytes, int], "tuple[Any, ...] | None"]
ScanResponse = Callable[[bytes, bool], "tuple[Any, ...] | None"]
UpstreamHead = Callable[
    [bytes, bytes, int, "tuple[bytes, ...]", bool, "bytes | None", bytes, bytes, "bytes | None",
     "bytes | None"],
    "bytes | None",
]  # fmt: skip

__all__ = ["COMPILED_MODULES", "compiled", "compiled_modules", "stale_modules"]

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


def module_files(name: str) -> tuple[Path, Path, Path | None]:
    """(the file ``name`` was imported from, its ``.py`` source, its ``.pxd`` if any)."""
    module = importlib.import_module(name)
    loaded = Path(module.__file__ or "")
    source = loaded.parent / (name.rsplit(".", 1)[1] + ".py")
    pxd = source.with_suffix(".pxd")
    return loaded, source, pxd if pxd.exists() else None


def compiled_modules() -> dict[str, bool]:
    """For each of ``COMPILED_MODULES``: does it run compiled (an extension module) here?"""
    return {name: module_files(name)[0].suffix != ".py" for name in COMPILED_MODULES}


def stale_modules() -> list[str]:
    """Compiled modules built before their ``.py`` or ``.pxd`` last changed. The extension
    shadows the source, so an edit has no effect until ``pip install -e .`` (``make test``)
    rebuilds it. Only in a source checkout (setup.py next to the package): an installed copy
    gets whatever file times its installer gives it."""
    if not (Path(__file__).resolve().parents[2] / "setup.py").exists():
        return []
    stale = []
    for name in COMPILED_MODULES:
        loaded, source, pxd = module_files(name)
        if loaded.suffix == ".py":
            continue
        built = loaded.stat().st_mtime
        if any(p is not None and p.stat().st_mtime > built for p in (source, pxd)):
            stale.append(name)
    return stale

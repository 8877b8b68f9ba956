"""``LB_NO_EXTENSIONS=1`` at run time: import the L7 hot-path modules from their ``.py`` source
even where setup.py compiled them (a compiled module would otherwise shadow its source).

A finder ahead of the standard ones that only knows the source loader, and only for
``COMPILED_MODULES``. Everything else imports as usual. This is how the test
suite runs the plain-Python build on a machine that has the compiled one (``.ci/run`` does a
pass with it), and how to rule the compiled modules out when chasing a bug.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from importlib.machinery import SOURCE_SUFFIXES, FileFinder, ModuleSpec, SourceFileLoader
from types import ModuleType

#: The modules setup.py compiles from their own ``.py`` source, each with the ``.pxd`` next to it
#: that declares its class layouts. The one list: setup.py reads it from this file, and
#: ``lb.http._fast`` imports it. (It lives here, with no lb imports, because this finder must
#: be in place before any of them is imported.)
COMPILED_MODULES = (
    "lb.http.heads",
    "lb.http.framing",
    "lb.http.request",
    "lb.http.response",
    "lb.http.rewrite",
    "lb.proxy.pool",
    "lb.proxy.upstream_pool",
    "lb.proxy.http",
)
MODULES = frozenset(COMPILED_MODULES)


class SourceOnlyFinder:
    """A ``sys.meta_path`` finder: the listed modules from ``.py`` files only."""

    @classmethod
    def find_spec(
        cls, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if fullname not in MODULES or not path:
            return None
        for entry in path:
            spec = FileFinder(entry, (SourceFileLoader, SOURCE_SUFFIXES)).find_spec(fullname)
            if spec is not None:
                return spec
        return None


def install() -> None:
    if not any(f is SourceOnlyFinder for f in sys.meta_path):
        sys.meta_path.insert(0, SourceOnlyFinder)

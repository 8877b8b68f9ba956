"""The compile story in one place: what setup.py compiles, the one switch that turns it off, the
finder that honours that switch at run time, and what runs compiled here.

Owns:

* ``COMPILED_MODULES``: the modules (the data path, and every strategy but round_robin) that
  setup.py compiles from their own ``.py`` source, each with the ``.pxd`` next to it that
  declares its class layouts;
  and ``SPEEDUPS``, the one module written in Cython (``lb/http/_speedups.pyx``: the scan of
  common heads).
* ``extensions_disabled()``: ``LB_NO_EXTENSIONS``, with one meaning for setup.py and the run
  time. ``1``/``true``/``yes``/``on`` turns the compiled parts off: setup.py builds none of them,
  and at run time the compiled modules are imported from their ``.py`` source (the finder
  below, installed by ``lb/__init__.py``) and the ``_speedups`` scan is not loaded. Unset,
  empty, ``0``/``false``/``no``/``off`` leave them on. Anything else is refused, at build and
  at run time alike, rather than guessed at. ``speedups_required()`` reads
  ``LB_REQUIRE_SPEEDUPS`` (``.ci/run`` sets it) the same way.
* ``load_speedups()``, the one place that decides whether the scan is loaded
  (``lb.http._fast`` hands its functions to the parsers), and the reports:
  ``speedups_loaded()``, ``compiled_modules()``, ``stale_modules()``, and ``report()``, all of
  them as text.

Never does: import anything from lb at module level. setup.py loads this file with
``runpy.run_path`` before lb is built, and ``lb/__init__.py`` imports it before any other lb
module, so that the finder is in place before a compiled module could be imported.
"""

from __future__ import annotations

import functools
import importlib
import os
import sys
from collections.abc import Mapping, Sequence
from importlib.machinery import SOURCE_SUFFIXES, FileFinder, ModuleSpec, SourceFileLoader
from pathlib import Path
from types import ModuleType

DISABLE_VAR = "LB_NO_EXTENSIONS"
REQUIRE_VAR = "LB_REQUIRE_SPEEDUPS"

SPEEDUPS = "lb.http._speedups"

COMPILED_MODULES = (
    "lb.model",
    "lb.balancing.peak_ewma",
    "lb.balancing.least_conn",
    "lb.balancing.random_two",
    "lb.balancing.weighted",
    "lb.balancing.consistent_hash",
    "lb.http.heads",
    "lb.http.framing",
    "lb.http.request",
    "lb.http.response",
    "lb.http.rewrite",
    "lb.proxy.pool",
    "lb.proxy.idle",
    "lb.proxy.context",
    "lb.proxy.exchange",
    "lb.proxy.http",
    "lb.proxy.tlsconn",
)
_SOURCE_ONLY = frozenset(COMPILED_MODULES)

_ON = frozenset({"1", "true", "yes", "on"})
_OFF = frozenset({"", "0", "false", "no", "off"})


def env_switch(name: str, environ: Mapping[str, str] | None = None) -> bool:
    """A yes/no environment variable: ``1``/``true``/``yes``/``on`` (any case) is yes; unset,
    empty, ``0``/``false``/``no``/``off`` is no. Raises ValueError for anything else."""
    raw = (os.environ if environ is None else environ).get(name, "")
    value = raw.strip().lower()
    if value in _ON:
        return True
    if value in _OFF:
        return False
    raise ValueError(f"{name}={raw!r} is neither on (1, true, yes) nor off (0, false, no, unset)")


def extensions_disabled(environ: Mapping[str, str] | None = None) -> bool:
    """``LB_NO_EXTENSIONS`` is on: build nothing (setup.py), run the plain Python (run time)."""
    return env_switch(DISABLE_VAR, environ)


def speedups_required(environ: Mapping[str, str] | None = None) -> bool:
    """``LB_REQUIRE_SPEEDUPS`` is on: the tests fail, instead of skipping, where the compiled
    parts did not build or do not run (``.ci/run`` sets it: the machine has a compiler)."""
    return env_switch(REQUIRE_VAR, environ)


# -- run time: the source-only finder ----------------------------------------------------------


class SourceOnlyFinder:
    """A ``sys.meta_path`` finder that imports ``COMPILED_MODULES`` from their ``.py`` files
    only, even where an extension module built from them sits next to them (and would shadow
    them). Everything else imports as usual. This is how the test suite runs the plain-Python
    build on a machine that has the compiled one (``make test`` does a pass with it), and how
    to rule the compiled modules out when chasing a bug."""

    @classmethod
    def find_spec(
        cls, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if fullname not in _SOURCE_ONLY or not path:
            return None
        for entry in path:
            spec = FileFinder(entry, (SourceFileLoader, SOURCE_SUFFIXES)).find_spec(fullname)
            if spec is not None:
                return spec
        return None


def install_source_finder() -> None:
    """Put ``SourceOnlyFinder`` ahead of the standard finders (once)."""
    if not any(f is SourceOnlyFinder for f in sys.meta_path):
        sys.meta_path.insert(0, SourceOnlyFinder)


@functools.cache
def load_speedups() -> ModuleType | None:
    """``lb.http._speedups``, or None when extensions are disabled or it was not built."""
    if extensions_disabled():
        return None
    try:
        return importlib.import_module(SPEEDUPS)
    except ImportError:
        return None


# -- reports -----------------------------------------------------------------------------------


def speedups_loaded() -> bool:
    """The parsers use the compiled scan of common heads."""
    return load_speedups() is not None


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
    if not (Path(__file__).resolve().parents[1] / "setup.py").exists():
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


def report() -> str:
    """What runs compiled here, one line each, and what a rebuild would change:
    ``python -c "import lb._compiled as c; print(c.report())"``."""
    lines = [
        f"{DISABLE_VAR}: {'on' if extensions_disabled() else 'off'}",
        f"{SPEEDUPS}: {'loaded' if speedups_loaded() else 'not loaded'}",
    ]
    lines += [
        f"{name}: {'compiled' if compiled else 'Python source'}"
        for name, compiled in compiled_modules().items()
    ]
    stale = stale_modules()
    if stale:
        lines.append(f"stale (built before their source changed; reinstall): {', '.join(stale)}")
    return "\n".join(lines)

"""The L7 modules that setup.py compiles from their own ``.py`` source stay compilable and
fresh.

A compiled class has exactly the attributes its ``.pxd`` declares: one that the ``.py`` sets but
the ``.pxd`` does not declare works in plain Python and fails compiled (AttributeError), so these
tests hold the two in step statically, whichever way this run imports them. With
``LB_REQUIRE_SPEEDUPS=1`` (set by ``.ci/run``) every module must run compiled, and a compiled
module older than its source fails the run (the extension would shadow the edit).
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from lb.http import _fast

ROOT = Path(__file__).resolve().parents[2]


def _source(name: str, suffix: str) -> Path:
    return ROOT / (name.replace(".", "/") + suffix)


def _pxd_classes(path: Path) -> dict[str, set[str]]:
    """``cdef class`` name -> the attribute names it declares, its base class's included (a
    base declared in another compiled module's ``.pxd``)."""
    classes: dict[str, set[str]] = {}
    bases: dict[str, str] = {}
    current: set[str] | None = None
    for line in path.read_text().splitlines():
        m = re.match(r"cdef class (\w+)(?:\((\w+)\))?", line)
        if m:
            current = classes.setdefault(m.group(1), set())
            if m.group(2):
                bases[m.group(1)] = m.group(2)
            continue
        m = re.match(r"    cdef public \w+ (.+)$", line)
        if m and current is not None:
            current.update(n.strip() for n in m.group(1).split(","))
    for cls, base in bases.items():
        for other in _fast.COMPILED_MODULES:
            found = _pxd_classes(_source(other, ".pxd")).get(base)
            if found is not None:
                classes[cls] |= found
                break
        else:
            raise AssertionError(f"{path.name}: base class {base} of {cls} is in no .pxd")
    return classes


def _own_pxd_attributes(path: Path, cls: str) -> set[str]:
    own: set[str] = set()
    current = False
    for line in path.read_text().splitlines():
        m = re.match(r"cdef class (\w+)", line)
        if m:
            current = m.group(1) == cls
            continue
        m = re.match(r"    cdef public \w+ (.+)$", line)
        if m and current:
            own.update(n.strip() for n in m.group(1).split(","))
    return own


def _py_classes(path: Path) -> dict[str, tuple[set[str], set[str] | None]]:
    """class name -> (the ``self.X`` it assigns, its ``__slots__`` or None)."""
    out: dict[str, tuple[set[str], set[str] | None]] = {}
    for node in ast.parse(path.read_text()).body:
        if not isinstance(node, ast.ClassDef):
            continue
        assigned: set[str] = set()
        slots: set[str] | None = None
        for sub in ast.walk(node):
            targets: list[ast.expr] = []
            if isinstance(sub, ast.Assign):
                targets = list(sub.targets)
            elif isinstance(sub, (ast.AnnAssign, ast.AugAssign)):
                targets = [sub.target]
            for t in targets:
                for e in ast.walk(t):
                    if (
                        isinstance(e, ast.Attribute)
                        and isinstance(e.value, ast.Name)
                        and e.value.id == "self"
                    ):
                        assigned.add(e.attr)
        for stmt in node.body:
            if (
                isinstance(stmt, ast.Assign)
                and any(isinstance(t, ast.Name) and t.id == "__slots__" for t in stmt.targets)
                and isinstance(stmt.value, ast.Tuple)
            ):
                slots = {ast.literal_eval(e) for e in stmt.value.elts}
        out[node.name] = (assigned, slots)
    return out


@pytest.mark.parametrize("name", _fast.COMPILED_MODULES)
def test_pxd_declares_every_attribute_the_class_sets(name: str) -> None:
    pxd = _source(name, ".pxd")
    assert pxd.exists(), f"{name} is compiled, so it needs a .pxd (its C types)"
    declared = _pxd_classes(pxd)  # (none for a module of functions, lb.http.rewrite)
    py = _py_classes(_source(name, ".py"))
    for cls, attrs in declared.items():
        assert cls in py, f"{pxd} declares {cls}, which {name} does not define"
        assigned, slots = py[cls]
        missing = assigned - attrs
        assert not missing, f"{name}.{cls} sets {sorted(missing)}: declare them in {pxd.name}"
        if slots is not None:
            # The plain-Python class keeps __slots__ (memory, speed): the same names (a
            # subclass lists only its own; its base's are declared with the base).
            own = _own_pxd_attributes(pxd, cls)
            assert slots == own, f"{name}.{cls}: __slots__ and {pxd.name} differ"


def test_compiled_when_required() -> None:
    state = _fast.compiled_modules()
    if os.environ.get("LB_REQUIRE_SPEEDUPS") == "1":
        assert all(state.values()), f"LB_REQUIRE_SPEEDUPS=1 but some run as Python: {state}"
    elif not any(state.values()):
        pytest.skip("the L7 modules are not compiled here")


def test_no_compiled_module_is_older_than_its_source() -> None:
    stale = _fast.stale_modules()
    assert not stale, (
        f"{stale} were compiled before their .py/.pxd last changed, and the old build still "
        "runs: rebuild with `pip install -e .` (or `make test`)"
    )


def test_no_extensions_at_run_time_imports_every_module_from_source() -> None:
    code = (
        "from lb.http import _fast; import lb.proxy.http;"
        "print(any(_fast.compiled_modules().values()), _fast.compiled())"
    )
    env = {**os.environ, "LB_NO_EXTENSIONS": "1"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == ["False", "False"]

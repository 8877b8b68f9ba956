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


def _pxd_layouts(path: Path) -> dict[str, tuple[set[str], set[str]]]:
    """``cdef class`` name -> (the attribute names it declares, those it inherits from a base
    class cimported from another compiled module)."""
    text = path.read_text()
    cimported = {
        alias or name: (module, name)
        for module, name, alias in re.findall(
            r"^from ([\w.]+) cimport (\w+)(?: as (\w+))?$", text, re.MULTILINE
        )
    }
    classes: dict[str, tuple[set[str], set[str]]] = {}
    current: set[str] | None = None
    for line in text.splitlines():
        m = re.match(r"cdef class (\w+)(?:\((\w+)\))?", line)
        if m:
            inherited: set[str] = set()
            if m.group(2) in cimported:
                module, base = cimported[m.group(2)]
                attrs, more = _pxd_layouts(_source(module, ".pxd"))[base]
                inherited = attrs | more
            elif m.group(2):
                attrs, more = classes[m.group(2)]
                inherited = attrs | more
            current = set()
            classes[m.group(1)] = (current, inherited)
            continue
        m = re.match(r"    cdef public \w+ (.+)$", line)
        if m and current is not None:
            current.update(n.strip() for n in m.group(1).split(","))
    return classes


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
    declared = _pxd_layouts(pxd)  # (none for a module of functions, lb.http.rewrite)
    py = _py_classes(_source(name, ".py"))
    for cls, (attrs, inherited) in declared.items():
        assert cls in py, f"{pxd} declares {cls}, which {name} does not define"
        assigned, slots = py[cls]
        missing = assigned - attrs - inherited
        assert not missing, f"{name}.{cls} sets {sorted(missing)}: declare them in {pxd.name}"
        if slots is not None:
            # The plain-Python class keeps __slots__ (memory, speed): the same names, those
            # of a base class in the base's __slots__.
            assert slots == attrs, f"{name}.{cls}: __slots__ and {pxd.name} differ"


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

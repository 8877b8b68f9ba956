"""The L7 modules that setup.py compiles from their own ``.py`` source stay compilable and
fresh, and ``LB_NO_EXTENSIONS`` means one thing to setup.py and to the run time
(``lb/_compiled.py`` owns both).

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
import runpy
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import pytest
import setuptools

from lb import _compiled

ROOT = Path(__file__).resolve().parents[2]


def _source(name: str, suffix: str) -> Path:
    return ROOT / (name.replace(".", "/") + suffix)


def _pxd_layouts(path: Path) -> dict[str, tuple[set[str], set[str]]]:
    """``cdef class`` name -> (the attribute names it declares, those it inherits from a base
    class cimported from another compiled module)."""
    text = path.read_text()
    cimported: dict[str, tuple[str, str]] = {}
    for module, names in re.findall(r"^from ([\w.]+) cimport (.+)$", text, re.MULTILINE):
        for item in names.split(","):
            name, _, alias = item.strip().partition(" as ")
            cimported[alias.strip() or name] = (module, name)
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


@pytest.mark.parametrize("name", _compiled.COMPILED_MODULES)
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
    state = _compiled.compiled_modules()
    if _compiled.speedups_required():
        assert all(state.values()), f"LB_REQUIRE_SPEEDUPS=1 but some run as Python: {state}"
    elif not any(state.values()):
        pytest.skip("the L7 modules are not compiled here")


def test_no_compiled_module_is_older_than_its_source() -> None:
    stale = _compiled.stale_modules()
    assert not stale, (
        f"{stale} were compiled before their .py/.pxd last changed, and the old build still "
        "runs: rebuild with `pip install -e .` (or `make test`)"
    )


def _run_time(no_extensions: str | None) -> subprocess.CompletedProcess[str]:
    """(any module compiled, the scan loaded) in a fresh interpreter with that setting."""
    code = (
        "import lb.proxy.http; from lb import _compiled;"
        "print(any(_compiled.compiled_modules().values()), _compiled.speedups_loaded())"
    )
    env = {k: v for k, v in os.environ.items() if k != "LB_NO_EXTENSIONS"}
    if no_extensions is not None:
        env["LB_NO_EXTENSIONS"] = no_extensions
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)


def test_no_extensions_at_run_time_imports_every_module_from_source() -> None:
    out = _run_time("1")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "False"]


def test_no_extensions_0_at_run_time_is_unset() -> None:
    unset, zero = _run_time(None), _run_time("0")
    assert unset.returncode == zero.returncode == 0, unset.stderr + zero.stderr
    assert zero.stdout == unset.stdout


def test_a_no_extensions_value_that_means_nothing_is_refused_at_run_time() -> None:
    out = _run_time("maybe")
    assert out.returncode != 0
    assert "LB_NO_EXTENSIONS='maybe' is neither on (1, true, yes) nor off" in out.stderr


@pytest.mark.parametrize(
    ("value", "disabled"),
    [
        *[(v, False) for v in ("", "0", "false", "no", "off", " No ")],
        *[(v, True) for v in ("1", "true", "yes", "on", "TRUE ")],
    ],
)
def test_extensions_disabled_has_one_meaning(value: str, disabled: bool) -> None:
    assert _compiled.extensions_disabled({"LB_NO_EXTENSIONS": value}) is disabled
    assert _compiled.speedups_required({"LB_REQUIRE_SPEEDUPS": value}) is disabled


def test_extensions_disabled_refuses_what_means_nothing() -> None:
    assert _compiled.extensions_disabled({}) is False
    for value in ("2", "disable", "-1"):
        with pytest.raises(ValueError, match=f"LB_NO_EXTENSIONS='{value}' is neither on"):
            _compiled.extensions_disabled({"LB_NO_EXTENSIONS": value})


def _setup_py_extensions(monkeypatch: pytest.MonkeyPatch, no_extensions: str) -> list[str]:
    """The extension modules setup.py asks for with that setting (nothing is compiled:
    ``cythonize`` and ``setup`` are stand-ins that record what they were given)."""
    captured: dict[str, Any] = {}
    fake = types.ModuleType("Cython.Build")
    fake.cythonize = lambda sources, **kw: list(sources)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "Cython.Build", fake)
    monkeypatch.setattr(setuptools, "setup", lambda **kw: captured.update(kw))
    monkeypatch.setenv("LB_NO_EXTENSIONS", no_extensions)
    monkeypatch.chdir(ROOT)
    runpy.run_path(str(ROOT / "setup.py"), run_name="__main__")
    return [ext.name for ext in captured["ext_modules"]]


@pytest.mark.parametrize("value", ["", "0", "false"])
def test_setup_py_builds_everything_unless_disabled(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    # Before lb/_compiled.py, setup.py skipped the build for any non-empty value, "0" too.
    built = _setup_py_extensions(monkeypatch, value)
    assert built == [_compiled.SPEEDUPS, *_compiled.COMPILED_MODULES]


@pytest.mark.parametrize("value", ["1", "yes"])
def test_setup_py_builds_nothing_when_disabled(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    assert _setup_py_extensions(monkeypatch, value) == []


def test_setup_py_refuses_what_means_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="LB_NO_EXTENSIONS='y' is neither on"):
        _setup_py_extensions(monkeypatch, "y")

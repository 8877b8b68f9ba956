"""The compiled strategies (``least_conn``, ``random_two``, ``weighted``, ``consistent_hash``:
their ``.pxd`` next to them) and the same modules as plain Python decide alike: the same
updates, the same in-flight counts, the same keys and the same random draws give the same
picks, in the same order. The plain-Python module is loaded from its ``.py`` source next to the
compiled one, as ``LB_NO_EXTENSIONS=1`` would run it."""

from __future__ import annotations

import importlib
import importlib.util
import random
from pathlib import Path
from types import ModuleType

import pytest

from lb import _compiled
from lb.balancing.base import tracks_load
from lb.balancing.options import StrategyOptions
from lb.model import AdminState, Backend

#: module -> the strategy class it defines.
CASES = {
    "lb.balancing.least_conn": "LeastConn",
    "lb.balancing.random_two": "RandomTwo",
    "lb.balancing.weighted": "WeightedRoundRobin",
    "lb.balancing.consistent_hash": "ConsistentHash",
}


def _source_module(name: str) -> ModuleType:
    imported = importlib.import_module(name)
    short = name.rsplit(".", 1)[1]
    path = Path(imported.__file__ or "").with_name(short + ".py")
    spec = importlib.util.spec_from_file_location(f"_{short}_source", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _compiled_module(name: str) -> ModuleType:
    if not _compiled.compiled_modules()[name]:
        if _compiled.speedups_required():
            pytest.fail(f"LB_REQUIRE_SPEEDUPS=1 but {name} runs as Python")
        pytest.skip(f"{name} is not compiled here")
    return importlib.import_module(name)


def _trace(module: ModuleType, cls: str, options: StrategyOptions, seed: int) -> list[object]:
    """A busy pool of 7 backends (weights 1-3, one fractional as in a slow start), driven by a
    seeded closed loop of 10 requests in flight, with a weight change, a drain and a return on
    the way; the index of every pick."""
    s = getattr(module, cls)(options)
    bs = [Backend(f"127.0.0.1:{9000 + i}", 1 + i % 3) for i in range(7)]
    bs[4].effective_weight = 0.5
    s.update(bs)
    hooks = tracks_load(s)
    traffic = random.Random(seed)
    random.seed(seed + 1)  # random_two draws from the module-level random()
    keys = [f"user-{i}".encode() for i in range(50)] + [None]
    out: list[object] = []
    in_flight: list[Backend] = []
    for step in range(3000):
        if step == 1000:
            bs[2].effective_weight = 2.5
            s.update(list(bs))
        elif step == 1500:
            bs[5].admin = AdminState.DRAIN
            s.update(list(bs))
        elif step == 2200:
            bs[5].admin = AdminState.READY
            s.update(list(bs))
        while len(in_flight) < 10:
            b = s.pick(traffic.choice(keys))
            assert b is not None
            b.active += 1
            if hooks:
                s.on_acquire(b)
            in_flight.append(b)
            out.append(bs.index(b))
        b = in_flight.pop(traffic.randrange(len(in_flight)))
        b.active -= 1
        if hooks:
            s.on_release(b)
    return out


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("seed", [1, 2])
def test_compiled_and_plain_python_pick_alike(name: str, seed: int) -> None:
    compiled = _compiled_module(name)
    source = _source_module(name)
    assert compiled.__file__ != source.__file__
    options = StrategyOptions(bounded_load=1.25 if name.endswith("consistent_hash") else None)
    assert _trace(compiled, CASES[name], options, seed) == _trace(
        source, CASES[name], options, seed
    )


def test_the_trace_sees_the_changes() -> None:
    """The trace is not trivially the same: the picks depend on the weights and the drain
    (in plain Python, whatever the build)."""
    source = _source_module("lb.balancing.weighted")
    picks = _trace(source, "WeightedRoundRobin", StrategyOptions(), 1)
    counts = {i: picks.count(i) for i in range(7)}
    assert counts[1] > counts[0] and counts[4] < counts[0]
    assert 5 not in picks[1520:2200] and 5 in picks[2300:]  # drained, then back

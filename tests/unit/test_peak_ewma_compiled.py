"""``peak_ewma`` compiled (``lb/balancing/peak_ewma.pxd``) and as plain Python decide alike: the
same seeded draws, the same answers and the same in-flight counts give the same picks, bit for
bit the same estimates, and the same pool figures. The plain-Python module is loaded from its
``.py`` source next to the compiled one, as ``LB_NO_EXTENSIONS=1`` would run it."""

from __future__ import annotations

import importlib.util
import random
from pathlib import Path
from types import ModuleType

import pytest

import lb.balancing.peak_ewma as imported
from lb import _compiled
from lb.balancing.options import StrategyOptions
from lb.model import Backend

MS = 0.001


def _source_module() -> ModuleType:
    path = Path(imported.__file__ or "").with_name("peak_ewma.py")
    spec = importlib.util.spec_from_file_location("_peak_ewma_source", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _compiled_module() -> ModuleType:
    if not _compiled.compiled_modules()["lb.balancing.peak_ewma"]:
        if _compiled.speedups_required():
            pytest.fail("LB_REQUIRE_SPEEDUPS=1 but lb.balancing.peak_ewma runs as Python")
        pytest.skip("lb.balancing.peak_ewma is not compiled here")
    return imported


def _trace(
    module: ModuleType, options: StrategyOptions, seed: int, own_draws: bool = False
) -> list[object]:
    """A busy pool of 6 backends (one slow, one slowing down half way, weights 1-3), driven
    by a seeded closed loop; what the strategy says at every step. The picks draw from a
    seeded ``random.Random``, or (``own_draws``) from the strategy's own generator, seeded."""
    if own_draws:
        s = module.PeakEwma(options, seed=seed)
    else:
        s = module.PeakEwma(options, rng=random.Random(seed).random)
    bs = [Backend(f"127.0.0.1:{9000 + i}", 1 + i % 3) for i in range(6)]
    s.update(bs)
    traffic = random.Random(seed + 1)
    out: list[object] = []
    in_flight: list[tuple[float, Backend, float]] = []
    t = 100.0
    for step in range(4000):
        if step == 2000:
            bs[3].weight = 2  # a weight change keeps the estimates
            s.update(list(bs))
        while len(in_flight) < 12:
            b = s.pick(None)
            assert b is not None
            b.active += 1
            slow = b is bs[0] or (b is bs[1] and step > 2000)
            rtt = 0.020 if slow else traffic.uniform(0.0005, 0.003)
            in_flight.append((t + rtt, b, t))
            out.append(bs.index(b))
        in_flight.sort(key=lambda x: x[0])
        done, b, sent = in_flight.pop(0)
        # uvloop's clock counts milliseconds: many answers share a time.
        t = max(t, round(done, 3))
        s.on_latency(b, t - sent, t)
        b.active -= 1
        if step % 97 == 0:
            out.append((s.typical(), s.load(), [s.estimate(x) for x in bs]))
            out.append([s.score(x) for x in bs])
    for _, b, _ in in_flight:
        b.active -= 1
    return out


@pytest.mark.parametrize(
    "options",
    [
        StrategyOptions(),
        StrategyOptions(ewma_decay=1.0, ewma_floor=0.0),
        StrategyOptions(ewma_choices=3),
    ],
    ids=["defaults", "decay 1s, no floor", "choices 3"],
)
def test_compiled_and_plain_python_decide_alike(options: StrategyOptions) -> None:
    compiled = _compiled_module()
    source = _source_module()
    assert source.PeakEwma is not compiled.PeakEwma
    assert _trace(compiled, options, seed=5) == _trace(source, options, seed=5)


@pytest.mark.parametrize(
    "options",
    [StrategyOptions(), StrategyOptions(ewma_choices=3)],
    ids=["defaults", "choices 3"],
)
def test_the_own_generator_draws_alike_compiled_and_as_plain_python(
    options: StrategyOptions,
) -> None:
    compiled = _compiled_module()
    source = _source_module()
    a = _trace(compiled, options, seed=12345, own_draws=True)
    assert a == _trace(source, options, seed=12345, own_draws=True)
    assert a != _trace(compiled, options, seed=54321, own_draws=True)  # the seed matters


def test_the_compiled_hooks_check_their_arguments() -> None:
    compiled = _compiled_module()
    s = compiled.PeakEwma(StrategyOptions())
    b = Backend("127.0.0.1:9000")
    s.update([b])
    s.on_latency(b, 2 * MS, 1.0)
    assert s.estimate(b) == 2 * MS
    with pytest.raises(TypeError):
        s.on_latency("127.0.0.1:9000", 2 * MS, 1.0)
    with pytest.raises(TypeError):
        s.on_latency(b, "2ms", 1.0)

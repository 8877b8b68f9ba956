"""The strategy registry: built-ins, ``module:Class``, entry points, and helpful errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from lb.balancing import (
    BUILTIN_STRATEGIES,
    ENTRY_POINT_GROUP,
    ConsistentHash,
    Strategy,
    StrategyOptions,
    UnknownStrategy,
    WeightedRoundRobin,
    create_strategy,
    resolve_strategy,
)
from lb.model import Backend, HealthState

PLUGIN = "strategy_plugin_example"


@pytest.fixture(autouse=True)
def plugin_importable(monkeypatch: pytest.MonkeyPatch) -> None:
    # The fixture module sits next to this file; make that independent of pytest's import mode.
    monkeypatch.syspath_prepend(str(Path(__file__).parent))


def test_builtins() -> None:
    assert BUILTIN_STRATEGIES == (
        "round_robin",
        "weighted",
        "least_conn",
        "consistent_hash",
        "random_two",
        "peak_ewma",
    )
    for name in BUILTIN_STRATEGIES:
        assert isinstance(create_strategy(name, StrategyOptions()), Strategy)
    assert resolve_strategy("weighted") is WeightedRoundRobin


def test_options_reach_the_strategy() -> None:
    with pytest.raises(ValueError, match="bounded_load"):
        create_strategy("consistent_hash", StrategyOptions(bounded_load=0.5))
    assert isinstance(create_strategy("consistent_hash", StrategyOptions(vnodes=3)), ConsistentHash)


@pytest.mark.parametrize("ref", [f"{PLUGIN}:FirstEligible", f"{PLUGIN}:Namespace.FirstEligible"])
def test_module_colon_class(ref: str) -> None:
    options = StrategyOptions(vnodes=7)
    strategy = create_strategy(ref, options)
    assert type(strategy).__name__ == "FirstEligible"
    assert strategy.options is options  # type: ignore[attr-defined]
    standby = Backend("127.0.0.1:9001", health=HealthState.DOWN)
    primary = Backend("127.0.0.1:9002")
    strategy.update([standby, primary])
    assert strategy.pick(None) is primary


def test_entry_point(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A real (if minimal) installed distribution, found by importlib.metadata on sys.path.
    dist = tmp_path / "lb_fancy_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: lb-fancy-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        f"[{ENTRY_POINT_GROUP}]\nfirst_eligible = {PLUGIN}:FirstEligible\n"
        f"broken = {PLUGIN}:Missing\nleast_conn = {PLUGIN}:FirstEligible\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    strategy = create_strategy("first_eligible", StrategyOptions())
    assert type(strategy).__name__ == "FirstEligible"
    # A plugin cannot shadow a built-in name.
    assert type(create_strategy("least_conn", StrategyOptions())).__name__ == "LeastConn"
    with pytest.raises(UnknownStrategy, match="cannot load entry point"):
        resolve_strategy("broken")
    # Unknown names list what is installed.
    with pytest.raises(UnknownStrategy, match=r"installed plugins: .*first_eligible"):
        resolve_strategy("nope")


def test_unknown_name_explains_what_is_valid() -> None:
    with pytest.raises(UnknownStrategy) as caught:
        resolve_strategy("leastconn")
    message = str(caught.value)
    assert "'leastconn'" in message
    for name in BUILTIN_STRATEGIES:
        assert name in message
    assert "package.module:Class" in message
    assert ENTRY_POINT_GROUP in message
    assert isinstance(caught.value, ValueError)  # config validation catches ValueError


@pytest.mark.parametrize(
    ("ref", "why"),
    [
        ("no_such_module_xyz:Thing", "cannot import module 'no_such_module_xyz'"),
        (f"{PLUGIN}:Missing", "has no attribute 'Missing'"),
        (f"{PLUGIN}:Namespace.Missing", "has no attribute 'Namespace.Missing'"),
        (f"{PLUGIN}:", "not of the form 'package.module:Class'"),
        (":Thing", "not of the form 'package.module:Class'"),
        (".relative:Thing", "not of the form 'package.module:Class'"),
        (f"{PLUGIN}:NOT_CALLABLE", "names a 'int' object, not a strategy class"),
        (f"{PLUGIN}:NotAStrategy", "needs update\\(backends\\) and pick\\(key\\)"),
    ],
)
def test_bad_references(ref: str, why: str) -> None:
    with pytest.raises(UnknownStrategy, match=why):
        resolve_strategy(ref)


def test_factory_returning_a_non_strategy() -> None:
    with pytest.raises(UnknownStrategy, match="made a 'object' object"):
        create_strategy(f"{PLUGIN}:factory_returning_junk", StrategyOptions())

"""Every strategy picks only eligible backends, and nothing when none is eligible."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lb.balancing import BUILTIN_STRATEGIES, Strategy, StrategyOptions, create_strategy
from lb.model import AdminState, Backend, HealthState

INELIGIBLE: dict[str, Callable[[Backend], None]] = {
    "drain": lambda b: setattr(b, "admin", AdminState.DRAIN),
    "maint": lambda b: setattr(b, "admin", AdminState.MAINT),
    "down": lambda b: setattr(b, "health", HealthState.DOWN),
    "checking": lambda b: setattr(b, "health", HealthState.CHECKING),
    "ejected": lambda b: setattr(b, "ejected", True),
    "zero weight": lambda b: setattr(b, "effective_weight", 0.0),
}

KEYS: list[bytes | None] = [None, *(f"k{i}".encode() for i in range(200))]


def strategies() -> list[Strategy]:
    return [
        *(create_strategy(name, StrategyOptions()) for name in BUILTIN_STRATEGIES),
        create_strategy("consistent_hash", StrategyOptions(bounded_load=1.0)),
    ]


def backend(i: int, state: str | None = None) -> Backend:
    b = Backend(f"127.0.0.1:{9000 + i}", weight=1 + i % 3)
    if state is not None:
        INELIGIBLE[state](b)
    b.active = i % 4  # ineligible backends often still have connections
    return b


@pytest.mark.parametrize("strategy", strategies(), ids=lambda s: type(s).__name__)
def test_only_the_eligible_backend_is_picked(strategy: Strategy) -> None:
    ok = backend(99)
    backends = [backend(i, state) for i, state in enumerate(INELIGIBLE)]
    strategy.update([*backends[:3], ok, *backends[3:]])
    assert {strategy.pick(key) for key in KEYS * 3} == {ok}


@pytest.mark.parametrize("strategy", strategies(), ids=lambda s: type(s).__name__)
def test_none_when_nothing_is_eligible(strategy: Strategy) -> None:
    assert strategy.pick(b"k") is None  # before any update
    strategy.update([backend(i, state) for i, state in enumerate(INELIGIBLE)])
    assert {strategy.pick(key) for key in KEYS} == {None}
    strategy.update([])
    assert strategy.pick(None) is None


@pytest.mark.parametrize("strategy", strategies(), ids=lambda s: type(s).__name__)
def test_a_backend_that_becomes_ineligible_stops_being_picked(strategy: Strategy) -> None:
    backends = [backend(i) for i in range(4)]
    strategy.update(backends)
    assert {strategy.pick(key) for key in KEYS} <= set(backends)
    backends[1].admin = AdminState.DRAIN
    backends[2].ejected = True
    strategy.update(backends)
    assert {strategy.pick(key) for key in KEYS} <= {backends[0], backends[3]}


@given(
    st.lists(st.sampled_from([None, *INELIGIBLE]), min_size=0, max_size=10),
    st.sampled_from(range(len(BUILTIN_STRATEGIES) + 1)),
)
def test_random_pools(states: list[str | None], which: int) -> None:
    strategy = strategies()[which]
    backends = [backend(i, state) for i, state in enumerate(states)]
    strategy.update(backends)
    eligible = {b for b in backends if b.eligible}
    for key in KEYS[:30]:
        picked = strategy.pick(key)
        if eligible:
            assert picked in eligible
        else:
            assert picked is None

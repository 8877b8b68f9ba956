"""Passive outlier detection: thresholds, doubling ejections, the max-percent cap."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lb.health.passive import (
    Ejection,
    EjectionPolicy,
    OutlierDetector,
    Refusal,
    decayed_ejections,
    ejection_duration,
    max_ejected,
)

POLICY = EjectionPolicy(
    consecutive_failures=3, ejection_time=10.0, max_ejection_time=60.0, max_ejection_percent=50
)
KEY = ("web", "a")


@pytest.mark.parametrize(
    ("nth", "seconds"),
    [(1, 10.0), (2, 20.0), (3, 40.0), (4, 60.0), (5, 60.0), (500, 60.0), (0, 10.0)],
)
def test_ejection_doubles_up_to_the_cap(nth: int, seconds: float) -> None:
    assert ejection_duration(POLICY, nth) == seconds


@pytest.mark.parametrize(
    ("previous", "quiet", "expected"),
    [(0, 100.0, 0), (3, 0.0, 3), (3, 9.9, 3), (3, 10.0, 2), (3, 25.0, 1), (3, 1e9, 0)],
)
def test_repeat_count_decays_per_ejection_time_in_service(
    previous: int, quiet: float, expected: int
) -> None:
    assert decayed_ejections(previous, quiet, 10.0) == expected


@pytest.mark.parametrize(
    ("size", "percent", "allowed"),
    [(3, 50, 1), (4, 50, 2), (4, 25, 1), (3, 10, 0), (10, 10, 1), (1, 100, 1), (5, 0, 0)],
)
def test_max_ejected_rounds_down(size: int, percent: int, allowed: int) -> None:
    assert max_ejected(size, percent) == allowed


def fail(
    d: OutlierDetector,
    now: float = 100.0,
    *,
    key: tuple[str, str] = KEY,
    policy: EjectionPolicy = POLICY,
    kind: str = "connect",
    eligible: bool = True,
    ejected_until: float = 0.0,
    ejections: int = 0,
    size: int = 4,
    ejected: int = 0,
) -> Ejection | Refusal | None:
    return d.failure(
        key,
        policy,
        now,
        kind=kind,
        error="connection refused",
        eligible_for_ejection=eligible,
        ejected_until=ejected_until,
        ejections=ejections,
        pool_size=size,
        ejected_in_pool=ejected,
    )


def test_threshold_ejects_with_an_informative_cause() -> None:
    d = OutlierDetector()
    assert fail(d) is None and fail(d) is None
    e = fail(d)
    assert isinstance(e, Ejection)
    assert e.until == 110.0 and e.duration == 10.0 and e.ejections == 1
    assert e.cause == "3 consecutive connect failures (connection refused); out for 10s"
    assert d.streak(KEY) == 0  # counting starts afresh after an ejection


def test_success_resets_the_count() -> None:
    d = OutlierDetector()
    fail(d), fail(d)
    d.success(KEY)
    assert fail(d) is None and fail(d) is None
    assert isinstance(fail(d), Ejection)


def test_repeat_ejection_doubles_and_says_so() -> None:
    d = OutlierDetector()
    for _ in range(2):
        fail(d, ejected_until=95.0, ejections=2)
    e = fail(d, ejected_until=95.0, ejections=2)  # back for 5s only: no decay
    assert isinstance(e, Ejection)
    assert e.ejections == 3 and e.duration == 40.0
    assert e.cause.endswith("out for 40s, ejection 3 in a row")


def test_long_good_behaviour_starts_over() -> None:
    d = OutlierDetector()
    for _ in range(2):
        fail(d, ejected_until=10.0, ejections=4)
    e = fail(d, ejected_until=10.0, ejections=4)  # 90s back in service: 9 decay steps
    assert isinstance(e, Ejection) and e.ejections == 1 and e.duration == 10.0


def test_5xx_counts_only_when_configured() -> None:
    d = OutlierDetector()
    for _ in range(5):
        assert fail(d, kind="5xx") is None
    assert d.streak(KEY) == 0
    on = EjectionPolicy(3, 10.0, 60.0, 50, on_5xx=True)
    fail(d, kind="5xx", policy=on), fail(d, kind="5xx", policy=on)
    e = fail(d, kind="5xx", policy=on)
    assert isinstance(e, Ejection) and "3 consecutive 5xx responses" in e.cause


def test_failures_of_an_ineligible_backend_are_not_counted() -> None:
    d = OutlierDetector()
    fail(d), fail(d)
    assert fail(d, eligible=False) is None  # down or already ejected: the count resets
    assert fail(d) is None and d.streak(KEY) == 1


def test_cap_refuses_and_keeps_counting() -> None:
    d = OutlierDetector()
    fail(d, size=3, ejected=1), fail(d, size=3, ejected=1)
    r = fail(d, size=3, ejected=1)
    assert isinstance(r, Refusal)
    assert "max_ejection_percent = 50 allows 1 of 3 ejected and 1 already are" in r.cause
    # Room frees up: the next failure ejects.
    assert isinstance(fail(d, size=3, ejected=0), Ejection)


def test_forget() -> None:
    d = OutlierDetector()
    fail(d)
    d.forget(KEY)
    assert d.streak(KEY) == 0


@settings(max_examples=200)
@given(
    size=st.integers(1, 8),
    percent=st.integers(0, 100),
    threshold=st.integers(1, 3),
    events=st.lists(st.tuples(st.integers(0, 7), st.booleans(), st.floats(0.0, 5.0)), max_size=150),
)
def test_max_ejection_percent_always_holds(
    size: int, percent: int, threshold: int, events: list[tuple[int, bool, float]]
) -> None:
    """Random failures, successes and time: never more than the cap ejected at once, and
    every ejection lasts ejection_time doubled per repeat, within the cap."""
    policy = EjectionPolicy(threshold, 1.0, 4.0, percent)
    d = OutlierDetector()
    until = [0.0] * size
    count = [0] * size
    now = 0.0
    cap = max_ejected(size, percent)
    for idx, failed, dt in events:
        now += dt
        i = idx % size
        key = ("p", str(i))
        if not failed:
            d.success(key)
            continue
        decision = d.failure(
            key,
            policy,
            now,
            kind="connect",
            error="",
            eligible_for_ejection=until[i] <= now,
            ejected_until=until[i],
            ejections=count[i],
            pool_size=size,
            ejected_in_pool=sum(1 for u in until if u > now),
        )
        if isinstance(decision, Ejection):
            assert 1.0 <= decision.duration <= 4.0
            assert decision.duration == min(4.0, 2 ** (decision.ejections - 1))
            until[i], count[i] = decision.until, decision.ejections
        assert sum(1 for u in until if u > now) <= cap

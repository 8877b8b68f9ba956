"""The scaling policy, table by table: the HPA's replica calculator (its own test cases and the
documented examples), stabilization windows, step limits, bounds and the reasons."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scaler.policy import Policy, PolicySpec, Sample, recommend

# A sample per member: a number is a ready member's value, "u:N" a member not in service yet
# (its value is never used), None a ready member without data.
Row = float | str | None


def members(*row: Row) -> list[Sample]:
    out = []
    for v in row:
        if isinstance(v, str):
            out.append(Sample(float(v[2:]), ready=False))
        else:
            out.append(Sample(None if v is None else float(v)))
    return out


# The HPA's replica calculator tests (kubernetes pkg/controller/podautoscaler/
# replica_calculator_test.go), CPU levels as percent of a 1-core request, plus the
# documented examples. (name, current, samples, target, expected)
HPA_CASES: list[tuple[str, int, tuple[Row, ...], float, int]] = [
    ("docs: 200m vs target 100m doubles", 2, (200, 200), 100, 4),
    ("docs: 50m vs target 100m halves", 4, (50, 50, 50, 50), 100, 2),
    ("TestReplicaCalcScaleUp", 3, (30, 50, 70), 30, 5),
    ("TestReplicaCalcScaleUpUnreadyLessScale", 3, ("u:30", 50, 70), 30, 4),
    ("TestReplicaCalcScaleUpUnreadyNoScale", 3, (40, "u:50", "u:70"), 30, 3),
    ("TestReplicaCalcScaleUpIgnoresFailedPods", 2, (50, 70), 30, 4),
    ("TestReplicaCalcScaleUpCM", 3, (20000, 10000, 30000), 15000, 4),
    ("TestReplicaCalcScaleDown", 5, (10, 30, 50, 25, 25), 50, 3),
    ("TestReplicaCalcScaleDownCM", 5, (12000,) * 5, 20000, 3),
    ("TestReplicaCalcScaleDownIncludeUnreadyPods", 5, (10, 30, 50, "u:25", "u:25"), 50, 2),
    ("TestReplicaCalcTolerance", 3, (101, 103, 102), 100, 3),
    ("TestReplicaCalcToleranceCM", 3, (20000, 21000, 21000), 20000, 3),
    ("TestReplicaCalcMissingMetrics", 4, (40, 9.5, None, None), 100, 3),
    ("TestReplicaCalcMissingMetricsNoChangeEq", 2, (100, None), 100, 2),
    ("TestReplicaCalcMissingMetricsNoChangeGt", 2, (190, None), 100, 2),
    ("TestReplicaCalcMissingMetricsNoChangeLt", 2, (60, None), 100, 2),
    ("TestReplicaCalcMissingMetricsUnreadyChange", 3, ("u:10", 45, None), 50, 3),
    ("TestReplicaCalcMissingMetricsUnreadyScaleUp", 3, ("u:10", 200, None), 50, 4),
    # The HPA fills a CPU-utilization pod without data at max(100 %, target) of its request,
    # and a Pods-metric pod at the target; lb's metrics are absolute, so the latter applies
    # (TestReplicaCalcMissingMetricsUnreadyScaleDown with target 50 % expects 3 for CPU).
    ("missing at target, one starting (Pods-metric form)", 4, ("u:10", 10, 10, None), 50, 2),
]


@pytest.mark.parametrize(
    ("current", "row", "target", "expected"),
    [c[1:] for c in HPA_CASES],
    ids=[c[0] for c in HPA_CASES],
)
def test_replica_calculator_matches_the_hpa(
    current: int, row: tuple[Row, ...], target: float, expected: int
) -> None:
    assert recommend(current, members(*row), target, 0.1).replicas == expected


def test_no_data_at_all_is_no_recommendation() -> None:
    assert recommend(3, members(None, None, "u:5"), 10, 0.1).replicas is None
    assert recommend(0, [], 10, 0.1).replicas is None


def test_tolerance_is_a_knob() -> None:
    row = members(14, 14)  # ratio 1.4
    assert recommend(2, row, 10, 0.1).replicas == 3
    assert recommend(2, row, 10, 0.5).replicas == 2
    assert recommend(2, members(6, 6), 10, 0.5).replicas == 2  # ratio 0.6, within 0.5
    assert recommend(2, members(6, 6), 10, 0.3).replicas == 2  # ceil(1.2) = 2
    assert recommend(4, members(6, 6, 6, 6), 10, 0.3).replicas == 3  # ceil(2.4)


samples_st = st.lists(
    st.one_of(
        st.none(),
        st.floats(min_value=0, max_value=1000, allow_nan=False),
        st.builds(lambda v: f"u:{v}", st.integers(0, 100)),
    ),
    min_size=1,
    max_size=12,
)


@given(samples_st, st.floats(min_value=0.5, max_value=500), st.sampled_from([0.0, 0.1, 0.3]))
def test_missing_or_starting_members_never_reverse_the_direction(
    row: list[Row], target: float, tolerance: float
) -> None:
    """No scale-down while the members with data are at or above the target, no scale-up
    while they are at or below it, whatever the members without data or not in service."""
    samples = members(*row)
    rec = recommend(len(samples), samples, target, tolerance)
    if rec.replicas is None:
        assert all(s.value is None or not s.ready for s in samples)
        return
    assert rec.ratio is not None
    if rec.ratio >= 1:
        assert rec.replicas >= len(samples)
    if rec.ratio <= 1:
        assert rec.replicas <= len(samples)


def spec(**kw: object) -> PolicySpec:
    base: dict[str, object] = {
        "min": 1,
        "max": 100,
        "target": 20.0,
        "scale_down_stabilization": 0.0,
        "max_add": None,
        "max_add_percent": None,
        "max_remove": None,
        "max_remove_percent": None,
        "panic_window": 0.0,  # off: these tables are about the HPA's steps (panic: below)
    }
    base.update(kw)
    return PolicySpec(**base)  # type: ignore[arg-type]


def at(value: float, n: int) -> list[Sample]:
    return [Sample(value)] * n


def test_the_issues_example_reason() -> None:
    p = Policy(spec(max_add=2), now=0, current=2)
    d = p.decide(1, 2, at(41, 2))
    assert (d.current, d.desired, d.recommendation) == (2, 4, 5)
    assert d.reason == (
        "scale up 2 -> 4: inflight_per_backend 41.0 > target 20.0 (ratio 2.05), "
        "limited by max_add=2"
    )
    assert d.action == "scale_up" and d.limited_by == "max_add=2"


def test_reasons_for_holds_and_scale_down() -> None:
    p = Policy(spec(), now=0, current=3)
    d = p.decide(1, 3, at(21, 3))
    assert d.reason == (
        "hold at 3: inflight_per_backend 21.0 > target 20.0 (ratio 1.05, within tolerance 0.1)"
    )
    d = p.decide(2, 3, at(5, 3))
    assert d.reason == "scale down 3 -> 1: inflight_per_backend 5.0 < target 20.0 (ratio 0.25)"
    d = p.decide(3, 3, [Sample(None), Sample(1, ready=False)])
    assert d.desired == 3 and d.reason.startswith("hold at 3: no data for inflight_per_backend")
    assert "no scale-down on missing data" in d.reason


def test_adjusted_ratio_is_explained() -> None:
    p = Policy(spec(), now=0, current=3)
    d = p.decide(1, 3, [Sample(60), Sample(0, ready=False), Sample(0, ready=False)])
    # Ready member at 3x the target, two starting ones counted as 0: ratio 1.0, no change.
    assert d.desired == 3
    assert "adjusted ratio 1.00: 2 starting members counted as 0: within tolerance" in d.reason


def test_bounds_are_repairs_without_limits() -> None:
    p = Policy(spec(min=2, max=4, max_add=1, max_remove=1), now=0, current=0)
    assert p.decide(1, 0, []).desired == 2
    assert p.decide(1, 0, []).reason == "scale up 0 -> 2: below min=2"
    assert p.decide(2, 7, at(20, 7)).desired == 4
    assert p.decide(2, 7, at(20, 7)).reason == "scale down 7 -> 4: above max=4"


def test_min_and_max_clamp_the_recommendation() -> None:
    p = Policy(spec(min=2, max=5), now=0, current=3)
    d = p.decide(1, 3, at(100, 3))  # wants 15
    assert (d.desired, d.limited_by) == (5, "max=5")
    assert d.reason.endswith("limited by max=5")
    d = p.decide(2, 3, at(0, 3))  # wants 0
    assert (d.desired, d.limited_by) == (2, "min=2")


# Step limits: (spec knobs, current, value, expected desired, limited_by)
STEP_CASES: list[tuple[dict[str, object], int, float, int, str | None]] = [
    # HPA default scale-up: 4 members or 100 % per period, whichever allows more.
    ({"max_add": 4, "max_add_percent": 100}, 1, 200, 5, "max_add=4"),
    ({"max_add": 4, "max_add_percent": 100}, 10, 200, 20, "max_add_percent=100"),
    ({"max_add": 4, "max_add_percent": 100}, 4, 200, 8, "max_add=4"),  # tie: 8 both ways
    ({"max_add_percent": 50}, 4, 200, 6, "max_add_percent=50"),
    ({"max_add_percent": 10}, 3, 200, 4, "max_add_percent=10"),  # ceil(3.3)
    ({"max_add": 2}, 3, 30, 5, None),  # wants ceil(4.5) = 5: within the limit
    ({"max_remove": 1}, 5, 0, 4, "max_remove=1"),
    ({"max_remove_percent": 50}, 5, 0, 2, "max_remove_percent=50"),  # keeps int(2.5)
    ({"max_remove": 1, "max_remove_percent": 50}, 5, 0, 2, "max_remove_percent=50"),
    ({}, 5, 0, 1, "min=1"),  # no limit at all
]


@pytest.mark.parametrize(("knobs", "current", "value", "desired", "limited_by"), STEP_CASES)
def test_step_limits(
    knobs: dict[str, object], current: int, value: float, desired: int, limited_by: str | None
) -> None:
    p = Policy(spec(**knobs), now=0, current=current)
    d = p.decide(1, current, at(value, current))
    assert (d.desired, d.limited_by) == (desired, limited_by)


def test_hpa_docs_scale_down_policies_80_replicas() -> None:
    """The HPA docs: Pods 4 and Percent 10 per 60 s, 80 replicas going to 10: the first step
    removes 8; at 72 the next removes 8 again (7.2 rounded up); at 40 or fewer the Pods policy
    applies (4)."""
    p = Policy(spec(max_remove=4, max_remove_percent=10, period=60), now=0, current=80)
    low = 1.0  # wants ceil(80 * 1/20) = 4, well below every limit
    d = p.decide(1, 80, at(low, 80))
    assert (d.desired, d.limited_by) == (72, "max_remove_percent=10")
    p.record(1, -8)
    d = p.decide(30, 72, at(low, 72))  # same period: counted from 80, so no further
    assert d.desired == 72
    d = p.decide(62, 72, at(low, 72))  # a new period
    assert (d.desired, d.limited_by) == (64, "max_remove_percent=10")
    p2 = Policy(spec(max_remove=4, max_remove_percent=10, period=60), now=0, current=40)
    assert p2.decide(1, 40, at(low, 40)).desired == 36
    p3 = Policy(spec(max_remove=4, max_remove_percent=10, period=60), now=0, current=30)
    d = p3.decide(1, 30, at(low, 30))
    assert (d.desired, d.limited_by) == (26, "max_remove=4")


def test_step_limit_counts_from_the_start_of_the_period() -> None:
    p = Policy(spec(max_add=2, period=10), now=0, current=2)
    assert p.decide(1, 2, at(100, 2)).desired == 4
    p.record(1, +2)
    d = p.decide(2, 4, at(100, 4))  # 2 already added this period
    assert (d.desired, d.limited_by) == (4, "max_add=2")
    d = p.decide(11.5, 4, at(100, 4))  # the period has passed
    assert d.desired == 6


def test_scale_down_stabilization_takes_the_highest_recommendation() -> None:
    p = Policy(spec(scale_down_stabilization=60), now=0, current=4)
    # At start the window holds the current count: no scale-down for a whole window.
    d = p.decide(10, 4, at(5, 4))  # recommends 1
    assert d.desired == 4
    assert "scale-down to 1 held by scale_down_stabilization=60s (highest recommendation 4)" in (
        d.reason
    )
    assert p.decide(30, 4, at(10, 4)).desired == 4  # recommends 2
    assert p.decide(61, 4, at(5, 4)).desired == 2  # the seed (t=0) left; 2 (t=30) remains
    assert p.decide(91, 4, at(5, 4)).desired == 1  # everything above 1 left the window


def test_scale_up_stabilization_takes_the_lowest_recommendation() -> None:
    p = Policy(spec(scale_up_stabilization=30), now=0, current=2)
    assert p.decide(1, 2, at(20, 2)).desired == 2  # at target: recommends 2
    d = p.decide(5, 2, at(60, 2))  # recommends 6, but 2 is in the window
    assert d.desired == 2
    assert "scale-up to 6 held by scale_up_stabilization=30s (lowest recommendation 2)" in d.reason
    assert p.decide(32, 2, at(60, 2)).desired == 6  # only 6s in the window now


def test_without_windows_it_follows_the_metric_at_once() -> None:
    p = Policy(spec(), now=0, current=1)
    assert p.decide(1, 1, at(100, 1)).desired == 5
    assert p.decide(2, 5, at(1, 5)).desired == 1


def test_no_data_records_nothing() -> None:
    p = Policy(spec(scale_down_stabilization=60), now=0, current=3)
    p.decide(1, 3, [Sample(None)] * 3)
    assert list(p.recommendations) == [(0, 3)]


# -- scale from zero, scale to zero ------------------------------------------------------------


def zero_spec(**kw: object) -> PolicySpec:
    return spec(min=0, max=5, target=10.0, scale_to_zero_after=60.0, **kw)


def test_scale_from_zero_goes_at_once_to_what_the_demand_needs() -> None:
    # A scale-up window and a step limit that would hold an ordinary scale-up back.
    p = Policy(zero_spec(max_add=1, scale_up_stabilization=30), now=0, current=0)
    d = p.decide(1, 0, [], demand=1)
    assert (d.current, d.desired) == (0, 1)
    assert d.reason == (
        "scale up 0 -> 1: scale from zero: demand (in flight + queued + held) 1 / target 10.0, "
        "at once"
    )
    assert p.decide(2, 0, [], demand=35).desired == 4
    d = p.decide(3, 0, [], demand=100)
    assert (d.desired, d.limited_by) == (5, "max=5")
    assert d.reason.endswith("at once, limited by max=5")


def test_scale_from_zero_with_a_metric_in_other_units_starts_one() -> None:
    p = Policy(zero_spec(metric="rps_per_backend"), now=0, current=0)
    d = p.decide(1, 0, [], demand=50)
    assert d.desired == 1
    assert d.reason == (
        "scale up 0 -> 1: scale from zero: demand (in flight + queued + held) 50, at once"
    )


def test_zero_members_without_demand_hold() -> None:
    p = Policy(zero_spec(), now=0, current=0)
    assert p.decide(1, 0, [], demand=0).reason == (
        "hold at 0: demand (in flight + queued + held) is 0"
    )
    assert p.decide(2, 0, [], demand=None).reason == "hold at 0: no demand figure from lb"


def test_min_above_zero_still_repairs_and_demand_can_ask_for_more() -> None:
    p = Policy(spec(min=2, max=5, target=10.0), now=0, current=0)
    assert p.decide(1, 0, [], demand=0).reason == "scale up 0 -> 2: below min=2"
    assert p.decide(1, 0, [], demand=45).desired == 5


def test_scale_to_zero_after_the_idle_time_and_not_before() -> None:
    p = Policy(zero_spec(), now=0, current=2)
    d = p.decide(10, 2, at(0, 2), demand=0)  # idle, but not for 60 s: the steps stop at 1
    assert d.desired == 1
    assert d.limited_by == "min=0 (0 only after scale_to_zero_after without demand)"
    assert p.decide(59, 1, at(0, 1), demand=0).desired == 1
    p.note_demand(30, 3)  # lb saw a request between two decisions: the idle time restarts
    assert p.decide(61, 1, at(0, 1), demand=0).desired == 1
    d = p.decide(91, 1, at(0, 1), demand=0)
    assert (d.current, d.desired) == (1, 0)
    assert d.reason == (
        "scale down 1 -> 0: demand (in flight + queued + held) has been 0 for 61s "
        "(scale_to_zero_after=60s)"
    )


def test_never_zero_while_there_is_demand_or_no_figure() -> None:
    p = Policy(zero_spec(), now=0, current=1)
    # One request queued in lb, none at the member yet: the member reports 0 in flight.
    assert p.decide(1000, 1, at(0, 1), demand=1).desired == 1
    assert p.decide(2000, 1, at(0, 1), demand=None).desired == 1


def test_a_restarted_scaler_waits_a_whole_idle_time() -> None:
    p = Policy(zero_spec(), now=500, current=1)
    assert p.decide(501, 1, at(0, 1), demand=0).desired == 1
    assert p.decide(560, 1, at(0, 1), demand=0).desired == 0


# -- panic mode --------------------------------------------------------------------------------


def panic_spec(**kw: object) -> PolicySpec:
    """The issue's acceptance: min 1, max 5, target 10, and a step limit (1 member per 15 s)
    that makes the HPA's steps slow."""
    base: dict[str, object] = {
        "min": 1,
        "max": 5,
        "target": 10.0,
        "max_add": 1,
        "panic_window": 6.0,
        "panic_threshold": 2.0,
        "scale_down_stabilization": 60.0,
    }
    base.update(kw)
    return spec(**base)


def steady(p: Policy, until: int, current: int, value: float) -> None:
    for t in range(1, until):
        assert p.decide(t, current, at(value, current)).desired == current


def test_a_load_step_from_1_to_40_reaches_4_members_in_one_decision() -> None:
    p = Policy(panic_spec(), now=0, current=1)
    steady(p, 6, 1, 1.0)
    d = p.decide(6, 1, at(40, 1), demand=40)
    assert (d.current, d.desired, d.panic) == (1, 4, True)
    assert d.reason == (
        "scale up 1 -> 4: panic: inflight_per_backend 40.0 per member over the last 6s is "
        "4.00x target 10.0 (panic_threshold 2; 1 member in service), so the short-window "
        "recommendation applies at once, without stabilization or step limits"
    )
    # The same step without panic mode: the HPA's step limit adds 1.
    hpa = Policy(panic_spec(panic_window=0.0), now=0, current=1)
    steady(hpa, 6, 1, 1.0)
    d = hpa.decide(6, 1, at(40, 1))
    assert (d.desired, d.limited_by, d.panic) == (2, "max_add=1", False)


def test_panic_is_clamped_by_max() -> None:
    p = Policy(panic_spec(), now=0, current=1)
    d = p.decide(1, 1, at(90, 1))
    assert (d.desired, d.limited_by, d.panic) == (5, "max=5", True)
    assert d.reason.endswith("limited by max=5")


def test_no_scale_down_while_panicking_then_panic_ends_after_the_stable_window() -> None:
    p = Policy(panic_spec(scale_down_stabilization=20.0), now=0, current=1)
    assert p.decide(1, 1, at(40, 1)).desired == 4
    # The burst is gone at once: the HPA alone would want 1.
    d = p.decide(2, 4, at(0.5, 4))
    assert (d.desired, d.panic) == (4, True)
    assert d.reason.startswith("hold at 4: inflight_per_backend 0.5 < target 10.0 (ratio 0.05)")
    assert "panic for 1s (until 20s without a burst): no scale-down" in d.reason
    for t in range(3, 21):
        assert p.decide(t, 4, at(0.5, 4)).desired == 4
    d = p.decide(21, 4, at(0.5, 4))  # 20 s since the panic condition last held
    assert d.panic is False
    assert "panic over: no burst for 20s (scale_down_stabilization=20s)" in d.reason
    # Scale-down is still held by the stabilization window, which saw the panic's 4 at t=1;
    # once that has left the window the pool goes down.
    assert p.decide(22, 4, at(0.5, 4)).desired == 1


def test_panic_uses_the_short_window_average_not_the_latest_value() -> None:
    p = Policy(panic_spec(max_add=None, max_add_percent=None), now=0, current=1)
    steady_value = 15.0  # above the target: the HPA path wants 2
    for t in range(1, 6):
        p.decide(t, 1, at(steady_value, 1))
    # 25 is 2.5x the target, but not a jump from 15: averaged with the window it is 1.67x.
    d = p.decide(6, 1, at(25, 1))
    assert not d.panic and d.desired == 3  # the HPA's answer: ceil(2.5)
    # A jump starts a new window: 60 after 25 is one.
    d = p.decide(7, 1, at(60, 1))
    assert d.panic and d.desired == 5


def test_panic_counts_the_members_in_service_and_waits_for_starting_ones() -> None:
    p = Policy(panic_spec(), now=0, current=1)
    assert p.decide(1, 1, at(40, 1)).desired == 4
    # Three members still checking: the one in service carries all 40; the panic's
    # recommendation is still 4, so nothing more is started.
    row = [Sample(40.0), *[Sample(None, ready=False)] * 3]
    d = p.decide(2, 4, row)
    assert (d.desired, d.panic) == (4, True)


def test_latency_never_panics() -> None:
    p = Policy(panic_spec(metric="p95_latency_ms", target=100.0), now=0, current=1)
    d = p.decide(1, 1, at(1000, 1))
    assert (d.desired, d.panic) == (2, False)


# -- properties ---------------------------------------------------------------------------------

step_st = st.tuples(
    st.floats(min_value=0.1, max_value=30),  # seconds since the previous decision
    st.lists(st.floats(min_value=0, max_value=200, allow_nan=False), max_size=6),  # in service
    st.integers(0, 3),  # members still starting
    st.one_of(st.none(), st.integers(0, 300)),  # demand
)


@given(
    st.integers(0, 3),
    st.integers(1, 8),
    st.lists(step_st, min_size=1, max_size=25),
    st.sampled_from([0.0, 6.0]),
    st.sampled_from([None, 1]),
)
def test_bounds_zero_and_panic_properties(
    lo: int,
    extra: int,
    steps: list[tuple[float, list[float], int, int | None]],
    panic_window: float,
    max_add: int | None,
) -> None:
    """Whatever the load: never below min, never above max, never 0 while there is demand
    (or no demand figure), never fewer members while panicking."""
    hi = lo + extra
    p = Policy(
        spec(
            min=lo,
            max=hi,
            target=10.0,
            scale_down_stabilization=10.0,
            scale_to_zero_after=20.0,
            panic_window=panic_window,
            max_add=max_add,
        ),
        now=0,
        current=lo,
    )
    now = 0.0
    for dt, values, starting, demand in steps:
        now += dt
        row = [Sample(v) for v in values][:hi] + [Sample(None, ready=False)] * starting
        current = min(len(row), hi)
        d = p.decide(now, current, row[:current], demand=demand)
        assert lo <= d.desired <= hi
        if demand is None or demand > 0:
            assert d.desired > 0 or (current == 0 and demand is None)
        if d.panic:
            assert d.desired >= current

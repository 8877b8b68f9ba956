"""The backend state machine and the pure health rules: tables and properties, no sockets."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lb.health_rules import (
    SLOW_START_FLOOR,
    Streaks,
    changing,
    decide,
    format_seconds,
    next_delay,
    parse_status_ranges,
    ramping,
    record,
    slow_start_weight,
    status_matches,
    transition_cause,
)
from lb.model import (
    ADMIN_TRANSITIONS,
    HEALTH_TRANSITIONS,
    AdminState,
    HealthState,
    IllegalTransition,
    check_admin_transition,
    check_health_transition,
)

C, U, D = HealthState.CHECKING, HealthState.UP, HealthState.DOWN

# -- the transition tables, every pair ------------------------------------------------------

LEGAL_HEALTH = {(C, U), (C, D), (U, D), (D, U)}


@pytest.mark.parametrize(("old", "new"), list(itertools.product(HealthState, HealthState)))
def test_health_transition_table(old: HealthState, new: HealthState) -> None:
    if (old, new) in LEGAL_HEALTH:
        check_health_transition(old, new)
    else:
        # Staying put is not a transition, and nothing goes back to checking.
        with pytest.raises(IllegalTransition, match=f"health {old} -> {new}"):
            check_health_transition(old, new)
    assert ((old, new) in LEGAL_HEALTH) == (new in HEALTH_TRANSITIONS[old])


@pytest.mark.parametrize(("old", "new"), list(itertools.product(AdminState, AdminState)))
def test_admin_transition_table(old: AdminState, new: AdminState) -> None:
    if old is new:
        with pytest.raises(IllegalTransition):
            check_admin_transition(old, new)
    else:
        check_admin_transition(old, new)  # operators can always undo a drain or maint
    assert (old is not new) == (new in ADMIN_TRANSITIONS[old])


# -- rise / fall ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("health", "streaks", "rise", "fall", "expected"),
    [
        (C, Streaks(), 2, 3, None),  # no result yet
        (C, Streaks(passed=1), 2, 3, U),  # first pass: traffic at once
        (C, Streaks(failed=1), 2, 3, D),  # first failure: down, needs rise passes
        (U, Streaks(passed=9), 2, 3, None),
        (U, Streaks(failed=1), 2, 3, None),
        (U, Streaks(failed=2), 2, 3, None),
        (U, Streaks(failed=3), 2, 3, D),
        (U, Streaks(failed=1), 2, 1, D),  # fall = 1
        (D, Streaks(failed=7), 2, 3, None),
        (D, Streaks(passed=1), 2, 3, None),
        (D, Streaks(passed=2), 2, 3, U),
        (D, Streaks(passed=1), 1, 3, U),  # rise = 1
    ],
)
def test_decide_table(
    health: HealthState, streaks: Streaks, rise: int, fall: int, expected: HealthState | None
) -> None:
    assert decide(health, streaks, rise, fall) is expected


def test_record_keeps_one_streak() -> None:
    s = Streaks()
    for passed, want in [
        (True, Streaks(1, 0)),
        (True, Streaks(2, 0)),
        (False, Streaks(0, 1)),
        (False, Streaks(0, 2)),
        (True, Streaks(1, 0)),
    ]:
        s = record(s, passed)
        assert s == want


def run(results: list[bool], rise: int, fall: int) -> list[tuple[HealthState, Streaks]]:
    """Feed results one by one, as the checker does; return the state after each."""
    health, streaks = C, Streaks()
    out = []
    for passed in results:
        streaks = record(streaks, passed)
        new = decide(health, streaks, rise, fall)
        if new is not None:
            check_health_transition(health, new)  # raises on an illegal move
            health = new
        out.append((health, streaks))
    return out


@given(
    st.lists(st.booleans(), min_size=1, max_size=60),
    st.integers(min_value=1, max_value=5),
    st.integers(min_value=1, max_value=5),
)
def test_rise_fall_properties(results: list[bool], rise: int, fall: int) -> None:
    states = run(results, rise, fall)
    # The first result decides a new backend's fate.
    assert states[0][0] is (U if results[0] else D)
    for i in range(1, len(results)):
        before, after = states[i - 1][0], states[i][0]
        trailing_fail = 0
        for r in reversed(results[: i + 1]):
            if r:
                break
            trailing_fail += 1
        trailing_pass = 0
        for r in reversed(results[: i + 1]):
            if not r:
                break
            trailing_pass += 1
        if before is U:
            # Goes down exactly when the fall-th failure in a row arrives.
            assert (after is D) == (trailing_fail >= fall)
        if before is D:
            assert (after is U) == (trailing_pass >= rise)
        # Never flips on a result that agrees with its state.
        if after is not before:
            assert results[i] == (after is U)


def test_changing_means_a_streak_against_the_state() -> None:
    assert changing(C, Streaks())
    assert not changing(U, Streaks(passed=3))
    assert changing(U, Streaks(failed=1))
    assert not changing(D, Streaks(failed=4))
    assert changing(D, Streaks(passed=1))


@pytest.mark.parametrize(
    ("health", "streaks", "expected"),
    [
        (U, Streaks(passed=5), 2.0),  # steady: interval
        (U, Streaks(failed=1), 0.5),  # going down: fast_interval
        (D, Streaks(failed=5), 2.0),
        (D, Streaks(passed=1), 0.5),  # coming back: fast_interval
        (C, Streaks(), 0.5),
    ],
)
def test_next_delay_without_jitter(health: HealthState, streaks: Streaks, expected: float) -> None:
    assert (
        next_delay(health, streaks, interval=2.0, fast_interval=0.5, jitter=0.0, rand=0.7)
        == expected
    )


@given(st.floats(0.0, 0.5), st.floats(0.0, 1.0, exclude_max=True), st.booleans())
def test_jitter_only_shortens(jitter: float, rand: float, steady: bool) -> None:
    streaks = Streaks(passed=3) if steady else Streaks(failed=1)
    base = 2.0 if steady else 0.5
    d = next_delay(U, streaks, interval=2.0, fast_interval=0.5, jitter=jitter, rand=rand)
    # Never later than the nominal period, so fall x interval + timeout bounds detection.
    assert base * (1 - jitter) - 1e-9 <= d <= base


@pytest.mark.parametrize(
    ("old", "new", "streaks", "detail", "expected"),
    [
        (
            U,
            D,
            Streaks(failed=3),
            "connection refused",
            "3 failed HTTP checks (connection refused)",
        ),
        (U, D, Streaks(failed=1), "timeout after 1s", "1 failed HTTP check (timeout after 1s)"),
        (D, U, Streaks(passed=2), "HTTP 200 in 1.2ms", "2 passed HTTP checks (HTTP 200 in 1.2ms)"),
        (C, U, Streaks(passed=1), "HTTP 200 in 1ms", "first HTTP check passed (HTTP 200 in 1ms)"),
        (C, D, Streaks(failed=1), "HTTP 503", "first HTTP check failed (HTTP 503)"),
    ],
)
def test_transition_cause(
    old: HealthState, new: HealthState, streaks: Streaks, detail: str, expected: str
) -> None:
    assert transition_cause("HTTP", old, new, streaks, detail) == expected


# -- slow start -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("weight", "elapsed", "window", "expected"),
    [
        (10, 0.0, 30.0, 10 * SLOW_START_FLOOR),
        (10, 15.0, 30.0, 10 * (SLOW_START_FLOOR + (1 - SLOW_START_FLOOR) / 2)),
        (10, 30.0, 30.0, 10.0),
        (10, 99.0, 30.0, 10.0),
        (10, 5.0, 0.0, 10.0),  # no slow start
        (0, 5.0, 30.0, 0.0),  # weight 0 stays out
        (4, -1.0, 30.0, 4 * SLOW_START_FLOOR),  # clock skew never goes below the floor
    ],
)
def test_slow_start_table(weight: int, elapsed: float, window: float, expected: float) -> None:
    assert slow_start_weight(weight, elapsed, window) == pytest.approx(expected)


@given(
    st.integers(1, 1000),
    st.floats(0.1, 600),
    st.lists(st.floats(0, 700), min_size=2, max_size=20),
)
def test_slow_start_ramps_up_monotonically(weight: int, window: float, times: list[float]) -> None:
    ws = [slow_start_weight(weight, t, window) for t in sorted(times)]
    assert ws == sorted(ws)
    assert all(weight * SLOW_START_FLOOR - 1e-9 <= w <= weight for w in ws)
    assert slow_start_weight(weight, window, window) == weight
    assert ramping(0.0, window) and not ramping(window, window) and not ramping(1.0, 0.0)


# -- expected statuses ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "ranges"),
    [
        ("200", ((200, 200),)),
        ("200-399", ((200, 399),)),
        ("200 - 204", ((200, 204),)),
        ("200,204", ((200, 200), (204, 204))),
        ("2xx", ((200, 299),)),
        ("2xx, 301-302 ,404", ((200, 299), (301, 302), (404, 404))),
    ],
)
def test_status_ranges_parse(text: str, ranges: tuple[tuple[int, int], ...]) -> None:
    assert parse_status_ranges(text) == ranges


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty status list"),
        ("200,", "empty status list"),
        ("ok", "'ok' is not a status"),
        ("2000", "'2000' is not a status"),
        ("399-200", "backwards; write 200-399"),
        ("700", "700 in '700' is not an HTTP status"),
        ("6xx", "'6xx' is not a status"),
    ],
)
def test_status_ranges_errors_say_what_is_valid(text: str, message: str) -> None:
    with pytest.raises(ValueError) as ei:
        parse_status_ranges(text)
    assert message in str(ei.value)


@given(st.integers(100, 599), st.integers(100, 599), st.integers(100, 599))
def test_status_matches_is_inclusive_range(a: int, b: int, status: int) -> None:
    lo, hi = min(a, b), max(a, b)
    ranges = parse_status_ranges(f"{lo}-{hi}")
    assert status_matches(ranges, status) == (lo <= status <= hi)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.0012, "1.2ms"),
        (0.25, "250ms"),
        (1.0, "1s"),
        (1.5, "1.5s"),
        (30.0, "30s"),
        (120.0, "2m"),
        (150.0, "2m30s"),
    ],
)
def test_format_seconds(seconds: float, text: str) -> None:
    assert format_seconds(seconds) == text

"""Pure health decisions: rise/fall counting, check pacing, slow start and status ranges.

Theory of operation
-------------------
The active checker feeds every check result (passed or failed) to ``record``, which keeps two
consecutive streaks, one of which is always zero. ``decide`` turns the current health and the
streaks into a transition, or none:

* ``checking`` (a backend nobody has checked yet) leaves on its *first* result: a pass makes it
  ``up``, a failure ``down``. A backend added at runtime therefore gets traffic as soon as one
  check passes.
* ``up`` goes ``down`` after ``fall`` consecutive failures.
* ``down`` comes back ``up`` after ``rise`` consecutive passes.

Every move ``decide`` returns is an edge of ``lb.model.HEALTH_TRANSITIONS`` (the unit tests
prove it for arbitrary result sequences), and ``transition_cause`` says why in the words an
operator wants to read in the log: ``3 failed HTTP checks (connection refused)``.

A backend is *changing* while it is ``checking`` or while a streak runs against its state (an
``up`` backend that failed at least once, a ``down`` one that passed at least once); then it is
checked every ``fast_interval`` instead of every ``interval`` (HAProxy's ``fastinter``). Jitter
only ever *shortens* a wait, so the detection bound ``fall * interval + timeout`` holds.

Slow start scales a backend's weight linearly from ``SLOW_START_FLOOR`` of its weight, when it
comes up, to all of it ``slow_start`` later.

This module does no I/O, never reads a clock and never imports asyncio. It imports only
``lb.model``: it sits below ``lb.config`` (which parses ``expect_status`` with it) and
``lb.state`` (which counts streaks and weighs slow start with it), and ``lb.health``, the
asyncio side of health checking, sits above all three (``[tool.importlinter]`` holds that).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from lb.model import HealthState

SLOW_START_FLOOR = 0.1
"""The share of its weight a backend gets the moment it comes up when slow start is on."""


# -- rise / fall ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Streaks:
    """Consecutive passed and failed checks; at most one of them is non-zero."""

    passed: int = 0
    failed: int = 0


def record(streaks: Streaks, passed: bool) -> Streaks:
    """The streaks after one more check result."""
    if passed:
        return Streaks(passed=streaks.passed + 1)
    return Streaks(failed=streaks.failed + 1)


def decide(health: HealthState, streaks: Streaks, rise: int, fall: int) -> HealthState | None:
    """The health a backend moves to after its latest check, or None to stay."""
    if health is HealthState.CHECKING:
        if streaks.passed:
            return HealthState.UP
        return HealthState.DOWN if streaks.failed else None
    if health is HealthState.UP and streaks.failed >= fall:
        return HealthState.DOWN
    if health is HealthState.DOWN and streaks.passed >= rise:
        return HealthState.UP
    return None


def changing(health: HealthState, streaks: Streaks) -> bool:
    """Whether the backend is on its way to another state (checks run at ``fast_interval``)."""
    return (
        health is HealthState.CHECKING
        or (health is HealthState.UP and streaks.failed > 0)
        or (health is HealthState.DOWN and streaks.passed > 0)
    )


def next_delay(
    health: HealthState,
    streaks: Streaks,
    *,
    interval: float,
    fast_interval: float,
    jitter: float,
    rand: float,
) -> float:
    """Seconds from the start of one check to the start of the next.

    ``rand`` is a uniform draw from [0, 1) supplied by the caller (so this stays pure); the
    wait is shortened by up to ``jitter`` of itself, never lengthened.
    """
    base = fast_interval if changing(health, streaks) else interval
    return base * (1.0 - jitter * rand)


def transition_cause(
    kind: str, old: HealthState, new: HealthState, streaks: Streaks, detail: str
) -> str:
    """Why a check moved a backend, e.g. ``3 failed HTTP checks (connection refused)``.

    ``kind`` is ``"TCP"`` or ``"HTTP"``; ``detail`` is the latest check's outcome.
    """
    if old is HealthState.CHECKING:
        verdict = "passed" if new is HealthState.UP else "failed"
        return f"first {kind} check {verdict} ({detail})"
    if new is HealthState.DOWN:
        n, verdict = streaks.failed, "failed"
    else:
        n, verdict = streaks.passed, "passed"
    plural = "s" if n != 1 else ""
    return f"{n} {verdict} {kind} check{plural} ({detail})"


# -- slow start -------------------------------------------------------------------------------


def slow_start_weight(weight: float, elapsed: float, window: float) -> float:
    """Effective weight ``elapsed`` seconds after coming up, with a ramp of ``window``.

    Linear from ``SLOW_START_FLOOR * weight`` at 0 to ``weight`` at ``window``; the full weight
    without a window or once it has passed. A weight of 0 stays 0 (the backend takes nothing).
    """
    if window <= 0 or elapsed >= window:
        return float(weight)
    fraction = SLOW_START_FLOOR + (1.0 - SLOW_START_FLOOR) * max(0.0, elapsed) / window
    return float(weight) * fraction


def ramping(elapsed: float, window: float) -> bool:
    """Whether a backend that came up ``elapsed`` seconds ago is still ramping."""
    return window > 0 and elapsed < window


# -- expected HTTP statuses -------------------------------------------------------------------

StatusRanges = tuple[tuple[int, int], ...]

_STATUS_PART = re.compile(r"^(?:([1-5])xx|(\d{3})(?:\s*-\s*(\d{3}))?)$")
_STATUS_HELP = 'use a status, a range, a class or a list, e.g. "200", "200-399", "2xx", "200,204"'


def parse_status_ranges(text: str) -> StatusRanges:
    """``"200-399"``, ``"200,204"``, ``"2xx"`` or a mix, into inclusive ranges.

    Raises ValueError with a message that says what is wrong and what would be valid.
    """
    parts = [p.strip() for p in text.split(",")]
    if not text.strip() or any(not p for p in parts):
        raise ValueError(f"empty status list; {_STATUS_HELP}")
    ranges: list[tuple[int, int]] = []
    for part in parts:
        m = _STATUS_PART.match(part)
        if m is None:
            raise ValueError(f"{part!r} is not a status; {_STATUS_HELP}")
        klass, lo_s, hi_s = m.groups()
        if klass is not None:
            lo, hi = int(klass) * 100, int(klass) * 100 + 99
        else:
            lo = int(lo_s)
            hi = int(hi_s) if hi_s is not None else lo
        for code in (lo, hi):
            if not 100 <= code <= 599:
                raise ValueError(f"{code} in {part!r} is not an HTTP status (100-599)")
        if lo > hi:
            raise ValueError(f"range {part!r} is backwards; write {hi}-{lo}")
        ranges.append((lo, hi))
    return tuple(ranges)


def status_matches(ranges: StatusRanges, status: int) -> bool:
    return any(lo <= status <= hi for lo, hi in ranges)


# -- wording ----------------------------------------------------------------------------------


def format_seconds(seconds: float) -> str:
    """A duration for humans: ``1.2ms``, ``250ms``, ``3s``, ``1.5s``, ``2m30s``."""
    if seconds < 0.01:
        return f"{seconds * 1000:.1f}ms"
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.1f}".removesuffix(".0") + "s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes}m{rest}s" if rest else f"{minutes}m"

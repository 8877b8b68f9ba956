"""Passive outlier detection: consecutive failures in real traffic eject a backend for a while.

Theory of operation
-------------------
Workers report a failure event for every connect failure (and, in HTTP mode, resets before a
response and optionally 5xx answers), and a success event the first time a backend succeeds
after having failed in that worker. ``OutlierDetector`` counts the failures reported since the
last success, per backend. When the count reaches ``consecutive_failures`` it decides to eject
the backend:

* the n-th ejection lasts ``ejection_time * 2 ** (n - 1)``, capped at ``max_ejection_time``;
* ``n`` decays by one for every ``ejection_time`` the backend then spends back in service
  without being ejected, so a backend that misbehaved once long ago starts over;
* an ejection that would make more than ``max_ejection_percent`` of the pool (all its
  backends) ejected at once is refused, whatever the failures: the cap always holds.

The detector ignores failures of a backend that is already ejected or not ``up`` (the active
checker is in charge of those) and starts counting afresh after each ejection. Readmission is
a timer in the caller: at ``until`` it clears the ejection and tells the workers.

"Consecutive" is across the reports of all workers in the order the supervisor receives them;
a worker reports a success only after it saw a failure itself, which keeps the data path to
one integer test per success.

This module does no I/O, never reads a clock and never imports asyncio.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from lb.health_rules import format_seconds

# Failure kinds workers report, and how the cause line names them.
KIND_WORDS = {
    "connect": "connect failures",
    "reset": "resets before a response",
    "timeout": "response timeouts",
    "5xx": "5xx responses",
}


@dataclass(frozen=True, slots=True)
class EjectionPolicy:
    consecutive_failures: int
    ejection_time: float
    max_ejection_time: float
    max_ejection_percent: int
    on_5xx: bool = False


@dataclass(frozen=True, slots=True)
class Ejection:
    """Eject until ``until`` (a monotonic time); ``ejections`` is the new repeat count."""

    until: float
    duration: float
    ejections: int
    cause: str


@dataclass(frozen=True, slots=True)
class Refusal:
    """The failure threshold was reached, but ejecting would break ``max_ejection_percent``."""

    cause: str


Decision = Ejection | Refusal | None


def ejection_duration(policy: EjectionPolicy, nth: int) -> float:
    """How long the ``nth`` (1-based) ejection in a row lasts: doubling, capped."""
    exponent = min(max(nth, 1) - 1, 62)  # 2**62 * any sane base is far past every cap
    return min(policy.max_ejection_time, policy.ejection_time * float(2**exponent))


def decayed_ejections(previous: int, quiet: float, ejection_time: float) -> int:
    """The repeat count after ``quiet`` seconds back in service: one step per ejection_time."""
    if previous <= 0 or quiet <= 0 or ejection_time <= 0:
        return max(previous, 0)
    return max(0, previous - math.floor(quiet / ejection_time))


def max_ejected(pool_size: int, percent: int) -> int:
    """How many backends of a pool may be ejected at once (rounded down: never exceeded)."""
    return pool_size * percent // 100


class OutlierDetector:
    """Consecutive-failure counts per backend key, and the ejection decisions they lead to."""

    __slots__ = ("_streaks",)

    def __init__(self) -> None:
        self._streaks: dict[tuple[str, str], int] = {}

    def streak(self, key: tuple[str, str]) -> int:
        return self._streaks.get(key, 0)

    def failure(
        self,
        key: tuple[str, str],
        policy: EjectionPolicy,
        now: float,
        *,
        kind: str,
        error: str,
        eligible_for_ejection: bool,
        ejected_until: float,
        ejections: int,
        pool_size: int,
        ejected_in_pool: int,
    ) -> Decision:
        """Count one reported failure; decide whether to eject.

        ``eligible_for_ejection`` is False when the backend is not ``up`` or is already
        ejected: such failures are not counted. ``ejected_until`` and ``ejections`` are the
        backend's last ejection deadline and repeat count; ``ejected_in_pool`` counts the
        backends of the pool ejected right now (this one excluded, as it is not ejected).
        """
        if kind == "5xx" and not policy.on_5xx:
            return None
        if not eligible_for_ejection:
            self._streaks.pop(key, None)
            return None
        n = self._streaks.get(key, 0) + 1
        self._streaks[key] = n
        if n < policy.consecutive_failures:
            return None
        what = KIND_WORDS.get(kind, f"{kind} failures")
        detail = f" ({error})" if error else ""
        cause = f"{n} consecutive {what}{detail}"
        allowed = max_ejected(pool_size, policy.max_ejection_percent)
        if ejected_in_pool + 1 > allowed:
            # Keep counting: the backend is ejected on its next failure once room frees up.
            return Refusal(
                f"{cause}, but max_ejection_percent = {policy.max_ejection_percent} allows "
                f"{allowed} of {pool_size} ejected and {ejected_in_pool} already are"
            )
        self._streaks.pop(key, None)
        quiet = now - ejected_until if ejected_until > 0 else 0.0
        nth = decayed_ejections(ejections, quiet, policy.ejection_time) + 1
        duration = ejection_duration(policy, nth)
        ordinal = f", ejection {nth} in a row" if nth > 1 else ""
        return Ejection(
            until=now + duration,
            duration=duration,
            ejections=nth,
            cause=f"{cause}; out for {format_seconds(duration)}{ordinal}",
        )

    def success(self, key: tuple[str, str]) -> None:
        self._streaks.pop(key, None)

    def forget(self, key: tuple[str, str]) -> None:
        self._streaks.pop(key, None)

"""The scaling policy: per-member metric samples in, a replica count and its reason out.

Theory of operation
-------------------
The policy is the Kubernetes Horizontal Pod Autoscaler's, step for step, so that its
documentation and its intuitions apply. Each ``interval`` the controller calls
``Policy.decide(now, current, samples)`` with one ``Sample`` per member:

1. **Bounds first.** Fewer members than ``min`` (or more than ``max``) go straight to the bound,
   with no metrics, stabilization or step limits involved: that is a repair, not a decision.
2. **Recommend** (``recommend``, the HPA's replica calculator). The average of the ready
   members' values gives ``ratio = average / target`` and ``ceil(ratio * ready members)``.
   A ratio within ``tolerance`` of 1 recommends no change. Members without data (``value``
   None) count as using exactly the target when the ratio says "down" and as 0 when it says
   "up"; members not yet in service (``ready`` False: still ``checking``, or failing health)
   count as 0, and only when the ratio says "up". If that adjustment puts the ratio within
   tolerance or reverses its direction, the recommendation is no change. So missing data
   never causes a scale-down, and members still starting damp a scale-up instead of making it
   overshoot. With no data at all there is no recommendation: the count holds.
3. **Stabilize.** Every recommendation is remembered. Scaling up goes to the *lowest*
   recommendation of the last ``scale_up_stabilization`` seconds, scaling down to the
   *highest* of the last ``scale_down_stabilization`` seconds; a new ``Policy`` remembers the
   count it started with, so a restarted scaler does not scale down before a whole window
   has passed.
4. **Limit the step.** Counting from the number of members at the start of the last
   ``period`` (changes recorded with ``record``), scale-up may add ``max_add`` members or
   ``max_add_percent`` percent, scale-down may remove ``max_remove`` or
   ``max_remove_percent`` percent; when both are set the larger allowance wins (the HPA's
   ``selectPolicy: Max``). Then ``min`` and ``max`` clamp.

Every ``Decision`` carries a reason that an operator can read without this paragraph, e.g.
``scale up 2 -> 4: inflight_per_backend 41.0 > target 20.0 (ratio 2.05), limited by max_add=2``.

This module is pure: it takes the clock as an argument, never sleeps and does no I/O.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class PolicySpec:
    """The knobs (``[[scalers]]`` fields of the same names). ``None`` turns a limit off."""

    min: int
    max: int
    target: float
    metric: str = "inflight_per_backend"
    tolerance: float = 0.1
    scale_up_stabilization: float = 0.0
    scale_down_stabilization: float = 300.0
    period: float = 15.0
    max_add: int | None = 4
    max_add_percent: float | None = 100.0
    max_remove: int | None = None
    max_remove_percent: float | None = 100.0


@dataclass(frozen=True, slots=True)
class Sample:
    """One member's value of the metric. ``value`` None: no data for it (missing).
    ``ready`` False: not in service yet (or failing health checks), so it has no load."""

    value: float | None
    ready: bool = True


@dataclass(frozen=True, slots=True)
class Recommendation:
    """What the metrics alone ask for. ``replicas`` None: no member had data."""

    replicas: int | None
    value: float | None = None  # average over the ready members with data
    ratio: float | None = None  # value / target
    adjusted_ratio: float | None = None  # after counting missing and starting members
    note: str = ""


@dataclass(frozen=True, slots=True)
class Decision:
    current: int
    desired: int
    reason: str
    value: float | None = None
    ratio: float | None = None
    recommendation: int | None = None  # before stabilization and limits
    limited_by: str | None = None

    @property
    def change(self) -> int:
        return self.desired - self.current

    @property
    def action(self) -> str:
        return "scale_up" if self.change > 0 else "scale_down" if self.change < 0 else "hold"


def _ceil(x: float) -> int:
    # 0.6 * 5 is 3.0000000000000004 in binary floating point: that is 3 replicas, not 4.
    return math.ceil(round(x, 9))


def _num(v: float) -> str:
    return f"{v:.1f}" if v == 0 or abs(v) >= 0.1 else f"{v:.2g}"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def recommend(
    current: int, samples: Sequence[Sample], target: float, tolerance: float
) -> Recommendation:
    """The HPA's replica calculator for an average-value metric (see the module docstring)."""
    values = [s.value for s in samples if s.ready and s.value is not None]
    missing = sum(1 for s in samples if s.ready and s.value is None)
    unready = sum(1 for s in samples if not s.ready)
    if not values:
        return Recommendation(None, note="no member in service has data")
    value = sum(values) / len(values)
    ratio = value / target
    scale_up_with_unready = unready > 0 and ratio > 1.0
    if not scale_up_with_unready and missing == 0:
        if abs(1.0 - ratio) <= tolerance:
            return Recommendation(current, value, ratio, ratio, "within tolerance")
        return Recommendation(_ceil(ratio * len(values)), value, ratio, ratio)
    filled = list(values)
    notes: list[str] = []
    if missing and ratio < 1.0:
        filled += [target] * missing
        notes.append(f"{_plural(missing, 'member')} without data counted at target")
    elif missing and ratio > 1.0:
        filled += [0.0] * missing
        notes.append(f"{_plural(missing, 'member')} without data counted as 0")
    if scale_up_with_unready:
        filled += [0.0] * unready
        notes.append(f"{_plural(unready, 'starting member')} counted as 0")
    adjusted = sum(filled) / len(filled) / target
    note = ", ".join(notes)
    if abs(1.0 - adjusted) <= tolerance:
        return Recommendation(current, value, ratio, adjusted, f"{note}: within tolerance")
    if (ratio < 1.0 < adjusted) or (adjusted < 1.0 < ratio):
        return Recommendation(current, value, ratio, adjusted, f"{note}: direction reversed")
    replicas = _ceil(adjusted * len(filled))
    if (adjusted < 1.0 and replicas > current) or (adjusted > 1.0 and replicas < current):
        return Recommendation(current, value, ratio, adjusted, f"{note}: direction reversed")
    return Recommendation(replicas, value, ratio, adjusted, note)


class Policy:
    """The stateful half: the recommendation history (stabilization) and the scale events
    (step limits). ``now`` is any monotonic clock, in seconds."""

    def __init__(self, spec: PolicySpec, now: float, current: int) -> None:
        self.spec = spec
        # As the HPA does at start: a restarted scaler waits a whole scale-down window.
        self.recommendations: deque[tuple[float, int]] = deque([(now, current)])
        self.events: deque[tuple[float, int]] = deque()  # (when, +added / -removed)

    def record(self, now: float, change: int) -> None:
        """The controller added (``change`` > 0) or removed members."""
        if change:
            self.events.append((now, change))

    def _prune(self, now: float) -> None:
        keep = max(self.spec.scale_up_stabilization, self.spec.scale_down_stabilization)
        while self.recommendations and self.recommendations[0][0] <= now - keep:
            self.recommendations.popleft()
        while self.events and self.events[0][0] <= now - self.spec.period:
            self.events.popleft()

    def period_start(self, now: float, current: int) -> int:
        """How many members there were at the start of the current period."""
        added = sum(c for t, c in self.events if t > now - self.spec.period and c > 0)
        removed = -sum(c for t, c in self.events if t > now - self.spec.period and c < 0)
        return current - added + removed

    def decide(self, now: float, current: int, samples: Sequence[Sample]) -> Decision:
        spec = self.spec
        self._prune(now)
        if current < spec.min:
            return Decision(
                current, spec.min, f"scale up {current} -> {spec.min}: below min={spec.min}"
            )
        if current > spec.max:
            return Decision(
                current, spec.max, f"scale down {current} -> {spec.max}: above max={spec.max}"
            )
        rec = recommend(current, samples, spec.target, spec.tolerance)
        if rec.replicas is None:
            return Decision(
                current,
                current,
                f"hold at {current}: no data for {spec.metric} "
                f"({rec.note}; no scale-down on missing data)",
            )
        assert rec.value is not None and rec.ratio is not None and rec.adjusted_ratio is not None
        raw = rec.replicas
        stabilized, held = self._stabilize(now, current, raw)
        self.recommendations.append((now, raw))
        desired, limited_by = self._limit(now, current, stabilized)

        sign = ">" if rec.ratio > 1 else "<" if rec.ratio < 1 else "="
        metric = (
            f"{spec.metric} {_num(rec.value)} {sign} target {_num(spec.target)} "
            f"(ratio {rec.ratio:.2f}"
        )
        if rec.note == "within tolerance":
            metric += f", within tolerance {spec.tolerance:g})"
        elif rec.note:
            metric += f"; adjusted ratio {rec.adjusted_ratio:.2f}: {rec.note})"
        else:
            metric += ")"
        if desired > current:
            head = f"scale up {current} -> {desired}"
        elif desired < current:
            head = f"scale down {current} -> {desired}"
        else:
            head = f"hold at {current}"
        reason = f"{head}: {metric}"
        if held:
            reason += f", {held}"
        if limited_by:
            reason += f", limited by {limited_by}"
        return Decision(
            current,
            desired,
            reason,
            value=rec.value,
            ratio=rec.ratio,
            recommendation=raw,
            limited_by=limited_by,
        )

    def _stabilize(self, now: float, current: int, raw: int) -> tuple[int, str]:
        spec = self.spec
        up_cutoff = now - spec.scale_up_stabilization
        down_cutoff = now - spec.scale_down_stabilization
        up, down = raw, raw
        for t, r in self.recommendations:
            if t > up_cutoff:
                up = min(up, r)
            if t > down_cutoff:
                down = max(down, r)
        stabilized = min(max(current, up), down)
        held = ""
        if raw < current and stabilized > raw:
            held = (
                f"scale-down to {raw} held by scale_down_stabilization="
                f"{spec.scale_down_stabilization:g}s (highest recommendation {down})"
            )
        elif raw > current and stabilized < raw:
            held = (
                f"scale-up to {raw} held by scale_up_stabilization="
                f"{spec.scale_up_stabilization:g}s (lowest recommendation {up})"
            )
        return stabilized, held

    def _limit(self, now: float, current: int, desired: int) -> tuple[int, str | None]:
        spec = self.spec
        start = self.period_start(now, current)
        if desired > current:
            limits: list[tuple[int, str]] = []
            if spec.max_add is not None:
                limits.append((start + spec.max_add, f"max_add={spec.max_add}"))
            if spec.max_add_percent is not None:
                allowed = _ceil(start * (1 + spec.max_add_percent / 100))
                limits.append((allowed, f"max_add_percent={spec.max_add_percent:g}"))
            # The larger allowance wins; on a tie the count-based limit is named.
            limit, why = max(limits, key=lambda x: x[0]) if limits else (spec.max, "")
            limit = max(limit, current)  # added this period already: no further for now
            if limit < spec.max:
                if desired > limit:
                    return limit, why
            elif desired > spec.max:
                return spec.max, f"max={spec.max}"
        elif desired < current:
            floors: list[tuple[int, str]] = []
            if spec.max_remove is not None:
                floors.append((start - spec.max_remove, f"max_remove={spec.max_remove}"))
            if spec.max_remove_percent is not None:
                floor = int(start * (1 - spec.max_remove_percent / 100) + 1e-9)
                floors.append((floor, f"max_remove_percent={spec.max_remove_percent:g}"))
            floor, why = min(floors, key=lambda x: x[0]) if floors else (spec.min, "")
            floor = min(floor, current)
            if floor > spec.min:
                if desired < floor:
                    return floor, why
            elif desired < spec.min:
                return spec.min, f"min={spec.min}"
        return desired, None

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

5. **Panic** (Knative's panic mode, for the additive metrics: in flight, requests/s, CPU).
   Every decision adds the pool's total (the sum over the members in service) to a short
   window of ``panic_window`` seconds; a *jump* (the total at least doubled and grew by at
   least one ``target`` since the previous decision, ``is_jump``) empties the window first,
   as the values before it describe a load that is gone. When the window's average total is
   at least ``panic_threshold`` times what the members in service hold at the target, the
   pool panics: it scales up to the short-window recommendation ``ceil(average / target)``
   at once, without stabilization or step limits (``max`` still clamps), and never scales
   down. Panic ends once ``scale_down_stabilization`` seconds have passed without the panic
   condition; the scale-down stabilization then still remembers the panic's count.
   ``p95_latency_ms`` has no pool total, so it never panics; ``panic_window = 0`` turns
   panic mode off.

**Zero.** With ``min = 0`` the controller passes the pool's *demand* (in flight + queued +
held in lb) to ``decide``, and ``note_demand`` between decisions. At 0 members a demand above
0 scales *from zero* at once to ``ceil(demand / target)`` (``inflight_per_backend``; 1 for the
other metrics), at least 1, at most ``max``. Members go back *to zero* only when the demand
has been 0 for ``scale_to_zero_after`` seconds and the pool is not panicking; until then the
ordinary steps stop at 1 member. An unknown demand (None) never leads to 0.

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
    scale_to_zero_after: float = 60.0  # with min = 0: idle time before the last member goes
    panic_window: float = 6.0
    panic_threshold: float = 2.0


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
    panic: bool = False  # the pool was panicking when this was decided

    @property
    def change(self) -> int:
        return self.desired - self.current

    @property
    def action(self) -> str:
        return "scale_up" if self.change > 0 else "scale_down" if self.change < 0 else "hold"


# Metrics whose pool total is the sum of the members' values (panic mode needs a total).
ADDITIVE_METRICS = frozenset({"inflight_per_backend", "rps_per_backend", "cpu_percent"})
DEMAND = "demand (in flight + queued + held)"
_ZERO_FLOOR = "min=0 (0 only after scale_to_zero_after without demand)"


def is_jump(before: float, after: float, step: float) -> bool:
    """A burst: ``after`` is at least twice ``before`` and at least ``step`` (one member's
    target) more. The panic window restarts on one; the controller wakes its loop on one."""
    return after >= 2 * before and after - before >= step


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


@dataclass(frozen=True, slots=True)
class Panic:
    """The short window's verdict at one decision."""

    average: float  # the window's average pool total
    ready: int  # members in service with data
    ratio: float  # average / (target * ready)
    wanted: int  # ceil(average / target)
    recommendation: int  # wanted, clamped to [max(min, 1), max]
    since: float  # when this panic began
    quiet: float  # seconds since the panic condition last held (0 while it holds)


class Policy:
    """The stateful half: the recommendation history (stabilization), the scale events
    (step limits), the panic window and the last time there was demand. ``now`` is any
    monotonic clock, in seconds."""

    def __init__(self, spec: PolicySpec, now: float, current: int) -> None:
        self.spec = spec
        # As the HPA does at start: a restarted scaler waits a whole scale-down window.
        self.recommendations: deque[tuple[float, int]] = deque([(now, current)])
        self.events: deque[tuple[float, int]] = deque()  # (when, +added / -removed)
        self.window: deque[tuple[float, float]] = deque()  # (when, pool total): panic window
        self.panic_since: float | None = None
        self.panic_last = 0.0  # when the panic condition last held
        # A restarted scaler does not go to zero before a whole scale_to_zero_after.
        self.busy_at = now

    def record(self, now: float, change: int) -> None:
        """The controller added (``change`` > 0) or removed members."""
        if change:
            self.events.append((now, change))

    def note_demand(self, now: float, demand: int) -> None:
        """lb reported the pool's demand between decisions (any demand resets the idle
        time that leads to zero)."""
        if demand > 0:
            self.busy_at = max(self.busy_at, now)

    @property
    def panicking(self) -> bool:
        return self.panic_since is not None

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

    def decide(
        self, now: float, current: int, samples: Sequence[Sample], demand: int | None = None
    ) -> Decision:
        """``demand``: the pool's in flight + queued + held in lb, None when unknown."""
        spec = self.spec
        self._prune(now)
        if demand is not None:
            self.note_demand(now, demand)
        if current == 0 and demand:
            return self._from_zero(now, demand)
        if current < spec.min:
            return Decision(
                current, spec.min, f"scale up {current} -> {spec.min}: below min={spec.min}"
            )
        if current > spec.max:
            return Decision(
                current, spec.max, f"scale down {current} -> {spec.max}: above max={spec.max}"
            )
        if current == 0:
            why = "no demand figure from lb" if demand is None else f"{DEMAND} is 0"
            return Decision(0, 0, f"hold at 0: {why}")
        panic, ended = self._panic(now, samples)
        idle = now - self.busy_at
        if spec.min == 0 and demand == 0 and idle >= spec.scale_to_zero_after and not panic:
            self.recommendations.append((now, 0))
            return Decision(
                current,
                0,
                f"scale down {current} -> 0: {DEMAND} has been 0 for {idle:.0f}s "
                f"(scale_to_zero_after={spec.scale_to_zero_after:g}s)" + ended,
            )
        rec = recommend(current, samples, spec.target, spec.tolerance)
        if rec.replicas is None:
            return Decision(
                current,
                current,
                f"hold at {current}: no data for {spec.metric} "
                f"({rec.note}; no scale-down on missing data)" + ended,
                panic=panic is not None,
            )
        assert rec.value is not None and rec.ratio is not None and rec.adjusted_ratio is not None
        raw = rec.replicas
        stabilized, held = self._stabilize(now, current, raw)
        desired, limited_by = self._limit(now, current, stabilized)
        driven = False
        if panic is not None:
            if panic.recommendation > desired:
                driven = True
                desired = panic.recommendation
                limited_by = f"max={spec.max}" if panic.wanted > spec.max else None
            desired = max(desired, current)  # no scale-down while panicking
        self.recommendations.append((now, desired if driven else raw))

        head = (
            f"scale up {current} -> {desired}"
            if desired > current
            else f"scale down {current} -> {desired}"
            if desired < current
            else f"hold at {current}"
        )
        if driven:
            assert panic is not None
            reason = f"{head}: {self._panic_text(panic)}"
        else:
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
            reason = f"{head}: {metric}"
            if held:
                reason += f", {held}"
            if panic is not None:
                reason += (
                    f"; panic for {now - panic.since:.0f}s (until "
                    f"{spec.scale_down_stabilization:g}s without a burst): no scale-down"
                )
        if limited_by:
            reason += f", limited by {limited_by}"
        return Decision(
            current,
            desired,
            reason + ended,
            value=rec.value,
            ratio=rec.ratio,
            recommendation=raw,
            limited_by=limited_by,
            panic=panic is not None,
        )

    def _from_zero(self, now: float, demand: int) -> Decision:
        spec = self.spec
        if spec.metric == "inflight_per_backend":
            need = _ceil(demand / spec.target)
            why = f"{DEMAND} {demand} / target {_num(spec.target)}"
        else:  # the demand is in requests, the target in another unit
            need, why = 1, f"{DEMAND} {demand}"
        desired = min(max(need, spec.min, 1), spec.max)
        self.recommendations.append((now, desired))
        reason = f"scale up 0 -> {desired}: scale from zero: {why}, at once"
        limited_by = None
        if desired < need:
            limited_by = f"max={spec.max}"
            reason += f", limited by {limited_by}"
        return Decision(0, desired, reason, recommendation=need, limited_by=limited_by)

    def _panic(self, now: float, samples: Sequence[Sample]) -> tuple[Panic | None, str]:
        """Add this decision's pool total to the panic window and update the panic state.
        Returns the panic (None when not panicking) and a note when a panic just ended."""
        spec = self.spec
        values = [s.value for s in samples if s.ready and s.value is not None]
        if spec.metric not in ADDITIVE_METRICS or spec.panic_window <= 0 or not values:
            return self._panic_state(now, None), ""
        total = sum(values)
        if self.window and is_jump(self.window[-1][1], total, spec.target):
            self.window.clear()  # a burst: what came before says nothing about this load
        self.window.append((now, total))
        while self.window[0][0] <= now - spec.panic_window:
            self.window.popleft()
        average = sum(t for _, t in self.window) / len(self.window)
        ratio = average / (spec.target * len(values))
        over = ratio >= spec.panic_threshold
        was = self.panic_since
        if over:
            self.panic_since = now if was is None else was
            self.panic_last = now
        panic = self._panic_state(now, (average, len(values), ratio))
        if was is not None and panic is None:
            return None, (
                f"; panic over: no burst for {now - self.panic_last:.0f}s "
                f"(scale_down_stabilization={spec.scale_down_stabilization:g}s)"
            )
        return panic, ""

    def _panic_state(self, now: float, seen: tuple[float, int, float] | None) -> Panic | None:
        spec = self.spec
        if self.panic_since is None:
            return None
        if now - self.panic_last >= spec.scale_down_stabilization and self.panic_last < now:
            self.panic_since = None
            return None
        if seen is None:  # no data this time: the panic holds, with nothing to add
            average, ready, ratio = 0.0, 0, 0.0
        else:
            average, ready, ratio = seen
        need = _ceil(average / spec.target)
        return Panic(
            average=average,
            ready=ready,
            ratio=ratio,
            wanted=need,
            recommendation=min(max(need, spec.min, 1), spec.max),
            since=self.panic_since,
            quiet=now - self.panic_last,
        )

    def _panic_text(self, p: Panic) -> str:
        spec = self.spec
        per = p.average / p.ready if p.ready else 0.0
        return (
            f"panic: {spec.metric} {_num(per)} per member over the last "
            f"{spec.panic_window:g}s is {p.ratio:.2f}x target {_num(spec.target)} "
            f"(panic_threshold {spec.panic_threshold:g}; {_plural(p.ready, 'member')} in "
            f"service), so the short-window recommendation applies at once, without "
            f"stabilization or step limits"
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
            # With min = 0 the ordinary steps stop at 1: zero is decided apart, on idle time.
            lo, lo_why = (spec.min, f"min={spec.min}") if spec.min else (1, _ZERO_FLOOR)
            floor, why = min(floors, key=lambda x: x[0]) if floors else (lo, "")
            floor = min(floor, current)
            if floor > lo:
                if desired < floor:
                    return floor, why
            elif desired < lo:
                return lo, lo_why
        return desired, None

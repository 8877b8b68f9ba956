"""From what lb reports about a pool to the policy's samples, and the choice of victims. Pure.

lb's stats (``GET /v1/pools/{pool}/stats``) give, per backend: admin and health state,
whether it is eligible for traffic, in-flight requests, requests per second and upstream
latency percentiles over a window. A member maps to one ``Sample``:

* admin state other than ``ready`` (an operator drained it): no sample at all; the HPA also
  sets aside pods that are being deleted;
* not eligible (``checking``, ``down``, ejected) or not registered: ``ready`` False, as it has
  no load yet;
* otherwise the metric's value, or None when there is none (no latency samples in the
  window, or the first CPU sample of a member).

For ``inflight_per_backend`` the value is the pool's *demand* (in flight + queued + held, from
lb's demand API) divided by its eligible backends, when the controller has that figure: with
``max_conn`` a backend's own in-flight count stops at its limit and the rest of the load waits
in lb, where only the demand sees it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from lb.control.models import BackendStats
from scaler.policy import Sample
from scaler.providers.base import Member


def metric_value(metric: str, st: BackendStats, cpu: float | None) -> float | None:
    if metric == "inflight_per_backend":
        return float(st.in_flight)
    if metric == "rps_per_backend":
        return st.rate
    if metric == "p95_latency_ms":
        return st.latency_ms.p95 if st.latency_ms is not None else None
    if metric == "cpu_percent":
        return cpu
    raise ValueError(f"unknown metric {metric!r}")


def samples(
    metric: str,
    members: Sequence[Member],
    stats: Mapping[str, BackendStats],
    cpu: Mapping[str, float | None],
    per_backend: float | None = None,
) -> list[Sample]:
    """One sample per member (``stats`` by address, ``cpu`` by member id). ``per_backend``:
    the pool's demand per eligible backend, which replaces a member's in-flight count for
    ``inflight_per_backend`` (with ``max_conn`` the count stops at the limit while the rest
    waits in lb's queue)."""
    out: list[Sample] = []
    for m in members:
        st = stats.get(m.address)
        if st is None:
            out.append(Sample(None, ready=False))
            continue
        if st.admin != "ready":
            continue
        if not st.eligible:
            out.append(Sample(None, ready=False))
            continue
        if per_backend is not None and metric == "inflight_per_backend":
            out.append(Sample(per_backend, ready=True))
            continue
        out.append(Sample(metric_value(metric, st, cpu.get(m.id)), ready=True))
    return out


def pick_victims(
    members: Sequence[Member], stats: Mapping[str, BackendStats], n: int
) -> list[Member]:
    """The ``n`` members to remove: fewest in-flight requests first, then the newest. Members
    an operator drained are left to the operator."""
    candidates = [m for m in members if (st := stats.get(m.address)) is None or st.admin == "ready"]

    def key(m: Member) -> tuple[int, float]:
        st = stats.get(m.address)
        return (st.in_flight if st is not None else 0, -m.created)

    return sorted(candidates, key=key)[:n]

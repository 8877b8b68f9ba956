"""Run the load scenarios: every proxy of a scenario in the same run, alternating, with wrk.

For each scenario the proxies start together (with configs from ``configs.py``) in front of the
shared nginx backend, each is warmed up (an unrecorded ``WARMUP_S`` run: the upstream
connections opened, the caches warm), then wrk drives each in turn: ``lb, haproxy, nginx`` in
odd rounds and the reverse in even rounds, so that drift on this shared machine (other jobs
starting or stopping) falls on all of them alike. Idle proxies use no CPU while another one is
measured. A proxy's figure is the median of its rounds, so one round disturbed by another job
does not move it. The ratio that matters, lb/HAProxy, compares figures measured minutes apart at
most.

A strategy-sweep scenario whose strategy is not round_robin also runs lb with round_robin
(``REFERENCE``, ``lb-rr``) in the same alternation, right next to lb: "every strategy at 0.9x of
lb's own round robin" is then a ratio within one run (``ratio("lb", REFERENCE)``), not one
between two scenarios minutes apart (the round_robin rows run first in the sweep, on a machine
that may be cooler or quieter).
"""

from __future__ import annotations

import http.client
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks import clients, proxies, wrk
from benchmarks.procs import Procs
from benchmarks.scenarios import Scenario


@dataclass
class ProxyRuns:
    proxy: str
    runs: list[wrk.WrkResult] = field(default_factory=list)

    @property
    def rps(self) -> float:
        return statistics.median(r.rps for r in self.runs) if self.runs else 0.0

    @property
    def p50_ms(self) -> float:
        return statistics.median(r.p50_ms for r in self.runs) if self.runs else float("nan")

    @property
    def p99_ms(self) -> float:
        return statistics.median(r.p99_ms for r in self.runs) if self.runs else float("nan")

    @property
    def errors(self) -> int:
        return sum(r.errors for r in self.runs)

    @property
    def peak_rss_kib(self) -> int:
        return max((r.peak_rss_kib for r in self.runs), default=0)

    def summary(self) -> dict[str, object]:
        return {
            "rps": self.rps,
            "p50_ms": self.p50_ms,
            "p99_ms": self.p99_ms,
            "errors": self.errors,
            "peak_rss_kib": self.peak_rss_kib,
        }


@dataclass
class ScenarioResult:
    scenario: Scenario
    duration_s: float
    rounds: int
    proxies: dict[str, ProxyRuns]
    failure: str = ""

    def ratio(self, proxy: str, reference: str = "haproxy") -> float | None:
        """``proxy``'s median req/s over ``reference``'s, or None when either is missing."""
        a = self.proxies.get(proxy)
        b = self.proxies.get(reference)
        if a is None or b is None or not a.runs or not b.rps:
            return None
        return a.rps / b.rps

    def round_ratios(self, proxy: str, reference: str = "haproxy") -> list[float]:
        """The ratio within each round: its spread shows how much the machine drifted."""
        a = self.proxies.get(proxy)
        b = self.proxies.get(reference)
        if a is None or b is None:
            return []
        return [x.rps / y.rps for x, y in zip(a.runs, b.runs, strict=False) if y.rps]


Progress = Callable[[str], None]

#: lb with round_robin, run beside lb in the strategy sweep (see the module docstring).
REFERENCE = "lb-rr"
#: Seconds of unrecorded load on each proxy before the first round.
WARMUP_S = 1.0


def _load(
    tmp: Path, sc: Scenario, r: proxies.Running, duration: float, lua: Path | None
) -> wrk.WrkResult:
    """One bounded run of the scenario's client against ``r``."""
    rss_pid = r.proc.pid if r.proc is not None else None
    if sc.client == "ab":
        return clients.run_ab(
            tmp=tmp,
            port=r.port,
            path=sc.path,
            connections=sc.connections,
            duration=duration,
            rss_pid=rss_pid,
        )
    if sc.client == "h2load":
        return clients.run_h2load(
            tmp=tmp,
            port=r.port,
            path=sc.path,
            connections=sc.connections,
            threads=sc.threads,
            duration=duration,
            rss_pid=rss_pid,
        )
    assert lua is not None, "wrk scenarios get their script from the caller"
    return wrk.run(
        port=r.port,
        path=sc.path,
        connections=sc.connections,
        threads=sc.threads,
        duration=duration,
        lua=lua,
        headers=sc.headers,
        rss_pid=rss_pid,
    )


def measured(sc: Scenario, which: list[str]) -> list[str]:
    """What a scenario measures: ``which``, plus lb's round-robin reference (``REFERENCE``,
    right after lb) in a strategy sweep of another strategy."""
    if sc.sweep and sc.strategy != "round_robin" and "lb" in which:
        i = which.index("lb") + 1
        return [*which[:i], REFERENCE, *which[i:]]
    return list(which)


def run_scenario(
    tmp: Path,
    sc: Scenario,
    backend_ports: list[int],
    which: list[str],
    *,
    duration: float,
    rounds: int,
    lb_src: Path | None,
    progress: Progress,
    label: str,
    warmup: float = WARMUP_S,
) -> ScenarioResult:
    lua = wrk.script(tmp, sc.hash_header, sc.browser)
    names = measured(sc, which)
    result = ScenarioResult(sc, duration, rounds, {p: ProxyRuns(p) for p in names})
    procs = Procs()
    try:
        running = {
            p: proxies.start(
                procs,
                tmp,
                "lb" if p == REFERENCE else p,
                name=f"{sc.name}-rr" if p == REFERENCE else sc.name,
                mode=sc.mode,
                backends=backend_ports[: sc.backends],
                weights=sc.weights,
                strategy="round_robin" if p == REFERENCE else sc.strategy,
                workers=sc.workers,
                lb_src=lb_src,
                max_conn=sc.max_conn,
                queue_timeout_s=sc.queue_timeout_s,
            )
            for p in names
        }
        for r in running.values():
            proxies.probe(r.port, sc.path, sc.headers)
        if warmup > 0:
            for p in names:
                _load(tmp, sc, running[p], warmup, lua)
        for rnd in range(rounds):
            order = names if rnd % 2 == 0 else list(reversed(names))
            for p in order:
                prefix = f"{label} {sc.name:<22} {p:<8} round {rnd + 1}/{rounds}"
                res = _load(tmp, sc, running[p], duration, lua)
                result.proxies[p].runs.append(res)
                errors = f"  errors {res.errors:,} ({res.error_kinds})" if res.errors else ""
                progress(
                    f"{prefix}  {res.rps:>9,.0f} req/s  p50 {res.p50_ms:6.2f} ms  "
                    f"p99 {res.p99_ms:7.2f} ms{errors}"
                )
        own = result.ratio("lb", REFERENCE)
        if own is not None:
            spread = ", ".join(f"{x:.2f}" for x in result.round_ratios("lb", REFERENCE))
            progress(f"{label} {sc.name:<22} lb / lb round robin {own:.2f}x (rounds: {spread})")
    except (RuntimeError, OSError, http.client.HTTPException) as exc:
        # One scenario failing (a proxy that would not start) must not cost the whole run.
        result.failure = str(exc)
        progress(f"{label} {sc.name}: FAILED: {exc}")
    finally:
        procs.stop_all()
    return result


def run_all(
    tmp: Path,
    scenarios: list[Scenario],
    backend_ports: list[int],
    which: list[str],
    *,
    duration: float,
    sweep_duration: float,
    rounds: int,
    lb_src: Path | None,
    progress: Progress,
) -> list[ScenarioResult]:
    started = time.monotonic()
    out = []
    for i, sc in enumerate(scenarios, 1):
        elapsed = int(time.monotonic() - started)
        label = f"[{i:>2}/{len(scenarios)} {elapsed // 60}:{elapsed % 60:02d}]"
        why = clients.missing(sc.client)
        if why is not None:
            # A client that is not installed: the scenario is left out of the run, not failed.
            progress(f"{label} {sc.name}: skipped: {why}")
            continue
        out.append(
            run_scenario(
                tmp,
                sc,
                backend_ports,
                which,
                duration=sweep_duration if sc.sweep else duration,
                rounds=rounds,
                lb_src=lb_src,
                progress=progress,
                label=label,
            )
        )
    return out

"""Markdown tables for a run: the ratios first, then the details that explain them."""

from __future__ import annotations

import math

from benchmarks import memory, micro, overload
from benchmarks.scenarios import STRATEGIES
from benchmarks.suite import REFERENCE, ScenarioResult

NAMES = {"lb": "lb", "haproxy": "HAProxy", "nginx": "nginx", "direct": "direct"}


def _rps(result: ScenarioResult, proxy: str) -> str:
    runs = result.proxies.get(proxy)
    return f"{runs.rps:,.0f}" if runs and runs.runs else "-"


def _ratio(value: float | None) -> str:
    return f"{value:.2f}x" if value is not None else "-"


def _ms(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.1f}"


def _spread(result: ScenarioResult, proxy: str) -> str:
    ratios = result.round_ratios(proxy)
    if len(ratios) < 2:
        return ""
    return f" ({min(ratios):.2f}-{max(ratios):.2f})"


def _target(result: ScenarioResult) -> str:
    target = result.scenario.target
    ratio = result.ratio("lb")
    if target is None:
        return ""
    if ratio is None:
        return f">= {target:.2f}"
    return f">= {target:.2f} {'met' if ratio >= target else '**missed**'}"


def _errors(result: ScenarioResult, proxies: list[str]) -> str:
    counts = [result.proxies[p].errors for p in proxies if p in result.proxies]
    return " / ".join(f"{c:,}" for c in counts) if any(counts) else "0"


def main_table(results: list[ScenarioResult], proxies: list[str]) -> str:
    """One row per scenario of the core, many-connections and workers groups."""
    others = [p for p in proxies if p != "haproxy"]
    head = (
        "| scenario | "
        + " | ".join(f"{NAMES[p]} req/s" for p in proxies)
        + " | "
        + " | ".join(f"{NAMES[p]} / HAProxy" for p in others)
        + " | target (lb) | p99 ms ("
        + " / ".join(NAMES[p] for p in proxies)
        + ") | errors |"
    )
    cols = 1 + len(proxies) + len(others) + 3
    lines = [head, "| --- " + "| ---: " * (cols - 1) + "|"]
    for r in results:
        if r.scenario.group == "strategies":
            continue
        if r.failure:
            lines.append(f"| {r.scenario.name} | failed: {r.failure} |" + " |" * (cols - 2))
            continue
        lines.append(
            f"| {r.scenario.name} | "
            + " | ".join(_rps(r, p) for p in proxies)
            + " | "
            + " | ".join(_ratio(r.ratio(p)) + _spread(r, p) for p in others)
            + f" | {_target(r)} | "
            + " / ".join(_ms(r.proxies[p].p99_ms) for p in proxies)
            + f" | {_errors(r, proxies)} |"
        )
    return "\n".join(lines) + "\n"


def many_table(results: list[ScenarioResult], proxies: list[str]) -> str:
    rows = [r for r in results if r.scenario.group == "many" and not r.failure]
    if not rows:
        return ""
    lines = [
        "| scenario | proxy | req/s | p50 ms | p99 ms | peak RSS MiB (process tree) | errors |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        for p in proxies:
            runs = r.proxies[p]
            lines.append(
                f"| {r.scenario.name} | {NAMES[p]} | {runs.rps:,.0f} | {_ms(runs.p50_ms)} | "
                f"{_ms(runs.p99_ms)} | {runs.peak_rss_kib / 1024:,.1f} | {runs.errors:,} |"
            )
    return "\n".join(lines) + "\n"


def workers_table(results: list[ScenarioResult], proxies: list[str]) -> str:
    """lb workers 1 -> 2 against HAProxy nbthread 1 -> 2 and nginx worker_processes 1 -> 2."""
    by_name = {r.scenario.name: r for r in results if not r.failure}
    pairs = [(base, f"{base}-w2") for base in ("l4", "l7") if {base, f"{base}-w2"} <= set(by_name)]
    if not pairs:
        return ""
    head = "| proxy | " + " | ".join(
        f"{base} 1 worker | {base} 2 workers | {base} 2/1" for base, _ in pairs
    )
    lines = [head + " |", "| --- " + "| ---: " * (3 * len(pairs)) + "|"]
    for p in proxies:
        cells = []
        for one, two in pairs:
            a, b = by_name[one].proxies[p].rps, by_name[two].proxies[p].rps
            cells.append(f"{a:,.0f} | {b:,.0f} | {b / a:.2f}x" if a else "- | - | -")
        lines.append(f"| {NAMES[p]} | " + " | ".join(cells) + " |")
    if "lb" in proxies and "haproxy" in proxies:
        cells = [
            f"{_ratio(by_name[one].ratio('lb'))} | {_ratio(by_name[two].ratio('lb'))} | "
            for one, two in pairs
        ]
        lines.append("| lb / HAProxy | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _own(r: ScenarioResult) -> str:
    """lb over lb's round robin run beside it (the sweep's reference), with the spread of the
    rounds; '-' for round robin itself, which has no reference."""
    own = r.ratio("lb", REFERENCE)
    if own is None:
        return "-"
    spread = r.round_ratios("lb", REFERENCE)
    if len(spread) < 2:
        return f"{own:.2f}x"
    return f"{own:.2f}x ({min(spread):.2f}-{max(spread):.2f})"


def strategies_table(results: list[ScenarioResult], proxies: list[str]) -> str:
    rows = [r for r in results if r.scenario.group == "strategies"]
    if not rows:
        return ""
    others = [p for p in proxies if p != "haproxy"]
    lines = [
        "| strategy | backends | HAProxy / nginx equivalent | "
        + " | ".join(f"{NAMES[p]} req/s" for p in proxies)
        + " | "
        + " | ".join(f"{NAMES[p]} / HAProxy" for p in others)
        + " | lb / lb round robin | lb p99 ms | errors |",
        "| --- | ---: | --- " + "| ---: " * (len(proxies) + len(others) + 3) + "|",
    ]
    for r in rows:
        sc = r.scenario
        haproxy, nginx = STRATEGIES[sc.strategy]
        if r.failure:
            lines.append(f"| {sc.strategy} | {sc.backends} | failed: {r.failure} |")
            continue
        lines.append(
            f"| {sc.strategy} | {sc.backends} | `{haproxy}` / `{nginx}` | "
            + " | ".join(_rps(r, p) for p in proxies)
            + " | "
            + " | ".join(_ratio(r.ratio(p)) for p in others)
            + f" | {_own(r)}"
            + f" | {_ms(r.proxies['lb'].p99_ms) if 'lb' in r.proxies else '-'} | "
            + f"{_errors(r, proxies)} |"
        )
    return "\n".join(lines) + "\n"


def render(
    meta: dict[str, object],
    results: list[ScenarioResult],
    proxies: list[str],
    mem: list[memory.MemoryResult],
    mic: micro.MicroResults | None,
) -> str:
    versions = meta.get("versions", {})
    assert isinstance(versions, dict)
    parts = [
        f"Date: {meta['date']}  ",
        f"Machine: {meta['machine']}  ",
        "Versions: " + ", ".join(f"{v}" for v in versions.values()) + "  ",
        f"Method: {meta['method']}  ",
        f"Total time: {meta['total_time']}",
        "",
    ]
    if results:
        parts += [
            "## Throughput: lb against HAProxy and nginx, same run, alternating",
            "",
            "Ratios are of median req/s over the rounds; in brackets, the lowest and highest "
            "ratio within a round (the machine's drift). p99 is the median over rounds. In the "
            "strategy sweep, 'lb / lb round robin' compares lb with lb running round robin "
            "beside it in the same rounds.",
            "",
            main_table(results, proxies),
        ]
        for title, table in (
            ("## 5,000 concurrent connections", many_table(results, proxies)),
            (
                "## Workers: 1 and 2 (2 cores, shared with wrk and the backend)",
                workers_table(results, proxies),
            ),
            ("## Strategies", strategies_table(results, proxies)),
            ("## 5,000 connections with max_conn", overload.table(results, proxies)),
        ):
            if table:
                parts += [title, "", table]
    if mem:
        parts += [
            "## Memory per idle client connection",
            "",
            "(RSS of the proxy's process tree with N idle connections - RSS before) / N held. "
            "'held' is how many of the N the proxy accepted and answered.",
            "",
            memory.render(mem),
        ]
    if mic is not None:
        parts += ["## Micro-benchmarks (lb only, pure code, one core)", "", micro.render(mic)]
    return "\n".join(parts)

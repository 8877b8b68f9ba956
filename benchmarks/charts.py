"""PNG charts of a run (matplotlib, from the ``bench`` extra; skipped with a note without it).

One chart per question a reader has:

* ``ratios.png``: how far is lb from HAProxy (and nginx), scenario by scenario, with targets;
* ``throughput.png``: the absolute req/s and p99 behind those ratios;
* ``strategies.png``: does throughput hold as the pool grows from 2 to 100 backends;
* ``many-connections.png``: req/s, p99 and memory with 5,000 connections;
* ``memory.png``: RSS per idle connection at 1k and 10k connections;
* ``pick.png``: pick() and update() cost against pool size (log-log; flat is the goal).

``python -m benchmarks.charts benchmarks/results/DATE`` redraws a run's charts from its
``results.json``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks import memory, micro, wrk
from benchmarks.report import NAMES
from benchmarks.scenarios import BACKEND_COUNTS, STRATEGIES, Scenario
from benchmarks.suite import ProxyRuns, ScenarioResult

if TYPE_CHECKING:
    from matplotlib.axes import Axes

COLORS = {"lb": "#1f77b4", "haproxy": "#ff7f0e", "nginx": "#2ca02c", "direct": "#7f7f7f"}


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # no display here; write files only
    import matplotlib.pyplot as plt

    return plt


def _bars(ax: Axes, labels: list[str], series: dict[str, list[float]], horizontal: bool) -> None:
    """Grouped bars: one group per label, one bar per series (proxy)."""
    n = len(series)
    width = 0.8 / max(n, 1)
    for i, (proxy, values) in enumerate(series.items()):
        pos = [j + (i - (n - 1) / 2) * width for j in range(len(labels))]
        if horizontal:
            ax.barh(pos, values, height=width, label=NAMES.get(proxy, proxy), color=COLORS[proxy])
        else:
            ax.bar(pos, values, width=width, label=NAMES.get(proxy, proxy), color=COLORS[proxy])
    if horizontal:
        ax.set_yticks(range(len(labels)), labels)
        ax.invert_yaxis()
    else:
        ax.set_xticks(range(len(labels)), labels, rotation=20, ha="right")


def ratios(path: Path, results: list[ScenarioResult], proxies: list[str]) -> None:
    plt = _plt()
    rows = [r for r in results if not r.failure and r.ratio("lb") is not None]
    if not rows:
        return
    others = [p for p in proxies if p != "haproxy"]
    labels = [r.scenario.name for r in rows]
    series = {p: [r.ratio(p) or 0.0 for r in rows] for p in others}
    fig, ax = plt.subplots(figsize=(9, 0.42 * len(rows) + 1.6))
    _bars(ax, labels, series, horizontal=True)
    ax.axvline(1.0, color=COLORS["haproxy"], linestyle="--", linewidth=1.5, label="HAProxy = 1.0")
    width = 0.8 / max(len(others), 1)
    labelled = False
    for j, r in enumerate(rows):
        if r.scenario.target is not None:
            ax.plot(
                [r.scenario.target] * 2,
                [j - 0.45, j + 0.45],
                color="crimson",
                linewidth=2.5,
                label=None if labelled else "lb target",
            )
            labelled = True
        for i, p in enumerate(others):
            value = series[p][j]
            ax.text(
                value + 0.01,
                j + (i - (len(others) - 1) / 2) * width,
                f"{value:.2f}",
                va="center",
                fontsize=7,
            )
    for j in range(1, len(rows)):
        if rows[j].scenario.group != rows[j - 1].scenario.group:
            ax.axhline(j - 0.5, color="grey", linewidth=0.6)
    ax.set_xlabel("req/s relative to HAProxy in the same run (higher is better)")
    ax.set_title("Throughput relative to HAProxy (1 worker / nbthread 1; -w2: 2 of each)")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def throughput(path: Path, results: list[ScenarioResult], proxies: list[str]) -> None:
    plt = _plt()
    rows = [r for r in results if not r.failure and r.scenario.group != "strategies"]
    if not rows:
        return
    labels = [r.scenario.name for r in rows]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 7.5), sharex=True)
    _bars(top, labels, {p: [r.proxies[p].rps for r in rows] for p in proxies}, False)
    top.set_ylabel("req/s")
    top.set_title("Throughput (mean of rounds; higher is better)")
    top.grid(axis="y", alpha=0.3)
    top.legend(fontsize=8)
    _bars(bottom, labels, {p: [r.proxies[p].p99_ms for r in rows] for p in proxies}, False)
    bottom.set_yscale("log")
    bottom.set_ylabel("p99 latency, ms (log)")
    bottom.set_title("p99 latency (lower is better)")
    bottom.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def strategies(path: Path, results: list[ScenarioResult], proxies: list[str]) -> None:
    plt = _plt()
    rows = {
        (r.scenario.strategy, r.scenario.backends): r
        for r in results
        if r.scenario.group == "strategies" and not r.failure
    }
    names = [s for s in STRATEGIES if any(k[0] == s for k in rows)]
    if not names:
        return
    fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 3.8), sharey=True)
    if len(names) == 1:
        axes = [axes]
    for ax, strategy in zip(axes, names, strict=True):
        counts = [n for n in BACKEND_COUNTS if (strategy, n) in rows]
        for p in proxies:
            ys = [rows[(strategy, n)].proxies[p].rps for n in counts]
            ax.plot(range(len(counts)), ys, marker="o", color=COLORS[p], label=NAMES[p])
        for i, n in enumerate(counts):
            ratio = rows[(strategy, n)].ratio("lb")
            if ratio is not None:
                ax.annotate(
                    f"{ratio:.2f}x",
                    (i, rows[(strategy, n)].proxies["lb"].rps),
                    textcoords="offset points",
                    xytext=(0, -13),
                    ha="center",
                    fontsize=7,
                    color=COLORS["lb"],
                )
        ax.set_xticks(range(len(counts)), [str(n) for n in counts])
        ax.set_xlim(-0.5, len(counts) - 0.5)
        ax.set_xlabel("backends")
        ax.set_title(strategy, fontsize=10)
        ax.grid(alpha=0.3)
    # One scale for all (sharey), from 0, with room above the highest point.
    top = max(runs.rps for r in rows.values() for runs in r.proxies.values())
    axes[0].set_ylim(0, top * 1.12)
    axes[0].set_ylabel("req/s (labels: lb / HAProxy)")
    axes[0].legend(fontsize=8)
    fig.suptitle("L7 keep-alive by strategy and pool size")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def many_connections(path: Path, results: list[ScenarioResult], proxies: list[str]) -> None:
    plt = _plt()
    rows = [r for r in results if r.scenario.group == "many" and not r.failure]
    if not rows:
        return
    r = rows[0]
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.6))
    names = [NAMES[p] for p in proxies]
    colors = [COLORS[p] for p in proxies]
    for ax, values, title in (
        (axes[0], [r.proxies[p].rps for p in proxies], "req/s"),
        (axes[1], [r.proxies[p].p99_ms for p in proxies], "p99 ms"),
        (axes[2], [r.proxies[p].peak_rss_kib / 1024 for p in proxies], "peak RSS, MiB"),
    ):
        ax.bar(names, values, color=colors)
        for i, v in enumerate(values):
            ax.text(
                i, v, f"{v:,.0f}" if v >= 100 else f"{v:,.1f}", ha="center", va="bottom", fontsize=8
            )
        ax.set_title(title)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(f"{r.scenario.connections:,} concurrent keep-alive connections (wrk -t1)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def memory_chart(path: Path, results: list[memory.MemoryResult]) -> None:
    plt = _plt()
    if not results:
        return
    counts = [s.target for s in results[0].steps]
    labels = [f"{NAMES[r.proxy]} {r.mode}" for r in results]
    fig, ax = plt.subplots(figsize=(9, 4))
    n = len(counts)
    width = 0.8 / n
    for i, count in enumerate(counts):
        values = [r.steps[i].kib_per_conn if i < len(r.steps) else 0.0 for r in results]
        pos = [j + (i - (n - 1) / 2) * width for j in range(len(results))]
        bars = ax.bar(
            pos,
            values,
            width=width,
            label=f"{count:,} connections",
            color=["#9ecae1", "#3182bd", "#08519c"][i % 3],
        )
        for bar, r in zip(bars, results, strict=True):
            held = r.steps[i].held if i < len(r.steps) else 0
            note = "" if held >= count else f"\n({held:,} held)"
            ax.text(
                bar.get_x() + bar.get_width() / 2,
                bar.get_height(),
                f"{bar.get_height():.1f}{note}",
                ha="center",
                va="bottom",
                fontsize=7,
            )
    ax.axhline(16, color="crimson", linestyle="--", linewidth=1, label="lb target: 16 KiB")
    ax.set_xticks(range(len(results)), labels)
    ax.set_ylabel("KiB per idle connection (RSS)")
    ax.set_title("Memory per idle client connection (lower is better)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def pick_chart(path: Path, results: micro.MicroResults) -> None:
    plt = _plt()
    if not results.pick:
        return
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.6))
    # One colour per strategy in both panels.
    palette = plt.get_cmap("tab10")
    color = {name: palette(i) for i, name in enumerate(micro.PICK_CASES)}
    for curve in results.pick:
        sizes = sorted(curve.ns)
        left.plot(
            sizes,
            [curve.ns[n] for n in sizes],
            marker="o",
            label=curve.name,
            color=color.get(curve.name),
        )
    left.set_xscale("log")
    left.set_yscale("log")
    left.set_xlabel("eligible backends")
    left.set_ylabel("ns per pick() (log)")
    left.set_title(f"pick() cost (flat = at most {micro.FLAT_LIMIT:g}x from 10 to 10,000)")
    left.grid(alpha=0.3, which="both")
    left.legend(fontsize=7)
    for curve in results.update_cold:
        sizes = sorted(curve.ns)
        right.plot(
            sizes,
            [curve.ns[n] / 1e6 for n in sizes],
            marker="o",
            label=curve.name,
            color=color.get(curve.name),
        )
    right.set_xscale("log")
    right.set_yscale("log")
    right.set_xlabel("eligible backends")
    right.set_ylabel("ms per update() (log)")
    right.set_title("update() cost, fresh strategy")
    right.grid(alpha=0.3, which="both")
    right.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def load(
    results_json: Path,
) -> tuple[list[ScenarioResult], list[str], list[memory.MemoryResult], micro.MicroResults | None]:
    """Read a run's results.json back (to redraw its charts without rerunning it)."""
    data = json.loads(results_json.read_text())
    results = []
    for s in data["scenarios"]:
        spec = dict(s["scenario"], headers=tuple(s["scenario"]["headers"]))
        runs = {
            p: ProxyRuns(p, [wrk.WrkResult(**run) for run in v["runs"]])
            for p, v in s["proxies"].items()
        }
        results.append(
            ScenarioResult(Scenario(**spec), s["duration_s"], s["rounds"], runs, s["failure"])
        )
    proxies = list(results[0].proxies) if results else []
    mem = [
        memory.MemoryResult(
            m["proxy"],
            m["mode"],
            m["baseline_kib"],
            [memory.Step(**x) for x in m["steps"]],
            m["note"],
        )
        for m in data["memory"]
    ]
    mic = None
    if data["micro"] is not None:

        def curves(items: list[dict[str, Any]]) -> list[micro.Curve]:
            return [
                micro.Curve(c["name"], {int(k): v for k, v in c["ns"].items()}, c["note"])
                for c in items
            ]

        m = data["micro"]
        mic = micro.MicroResults(
            curves(m["pick"]), curves(m["update_cold"]), curves(m["update_warm"]), m["http"]
        )
    return results, proxies, mem, mic


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmarks.charts benchmarks/results/DATE``: redraw that run's charts."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m benchmarks.charts RESULTS_DIR", file=sys.stderr)
        return 2
    out = Path(args[0])
    written = write_all(out, *load(out / "results.json"))
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


def write_all(
    out: Path,
    results: list[ScenarioResult],
    proxies: list[str],
    mem: list[memory.MemoryResult],
    mic: micro.MicroResults | None,
) -> list[Path]:
    """Write every chart that has data; return the files written (none without matplotlib)."""
    try:
        _plt()
    except ImportError:
        print("benchmarks: matplotlib is not installed; no charts (pip install -e '.[bench]')")
        return []
    jobs: list[tuple[str, Any]] = [
        ("ratios.png", lambda p: ratios(p, results, proxies)),
        ("throughput.png", lambda p: throughput(p, results, proxies)),
        ("strategies.png", lambda p: strategies(p, results, proxies)),
        ("many-connections.png", lambda p: many_connections(p, results, proxies)),
        ("memory.png", lambda p: memory_chart(p, mem)),
    ]
    if mic is not None:
        jobs.append(("pick.png", lambda p: pick_chart(p, mic)))
    written = []
    for name, job in jobs:
        path = out / name
        job(path)
        if path.exists():
            written.append(path)
    return written


if __name__ == "__main__":
    sys.exit(main())

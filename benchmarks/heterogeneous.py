"""A heterogeneous pool (issue 17): does a latency-aware strategy keep the slow backends' latency
out of the tail?

    python -m benchmarks.heterogeneous                    # 1 round, 20 s per proxy, ~2 min
    python -m benchmarks.heterogeneous --rounds 3 --out /tmp/het
    python -m benchmarks.heterogeneous --duration 6 --slow-after 3   # a quick look
    python -m benchmarks.heterogeneous --lb-old /tmp/lb-before --others haproxy   # A/B

Four ``lb.demo_server`` backends (one process each). When a run starts, backend 0 answers every
request ``--latency`` ms late (20 ms); ``--slow-after`` seconds later (10 s), backend 1 does too
(``/latency?ms=N`` on the backend, which takes effect at once). wrk drives each proxy with
``--connections`` keep-alive connections for ``--duration`` seconds, and the table gives req/s,
p50 and p99 over the whole run, and the share of requests each slow backend got (from the
backends' own counters: backend 0's over the whole run, backend 1's from when it slowed down).
Between runs every backend is made fast again.

The proxies, one worker / thread each, in front of the same four backends:

* lb ``peak_ewma`` (power of two choices on latency x (in-flight + the pool's usual
  in-flight)), as it comes and with ``choices = 3`` (``--ewma`` picks the variants),
  ``least_conn`` and ``round_robin``;
* HAProxy ``balance leastconn``; nginx ``least_conn``.

``--lb-old DIR`` adds the lb peak_ewma rows again, run from another checkout (``DIR``, with its
own ``.venv``), for a before/after in the same run; ``--others`` keeps some of the other rows
only (``haproxy``, ``nginx``, ``least_conn``, ``round_robin``).

The issue's target: lb ``peak_ewma``'s p99 at most half of HAProxy ``leastconn``'s, at no less
than 0.9x its req/s. The figures are reported, never asserted. This machine is shared and
noisy: compare the rows of one run, not runs with each other.
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from benchmarks import configs, wrk
from benchmarks.cpu import tree_cpu_seconds
from benchmarks.procs import ROOT, Procs, free_port, free_ports, raise_nofile, wait_log, wait_port
from benchmarks.proxies import Running, start

#: [pools.NAME.peak_ewma] settings of an lb peak_ewma row: (key, TOML value) pairs.
Variant = tuple[tuple[str, str], ...]
#: (row label, proxy, strategy) after the lb peak_ewma rows, in table order.
OTHERS: tuple[tuple[str, str, str], ...] = (
    ("lb least_conn", "lb", "least_conn"),
    ("lb round_robin", "lb", "round_robin"),
    ("HAProxy leastconn", "haproxy", "least_conn"),
    ("nginx least_conn", "nginx", "least_conn"),
)
BACKENDS = 4
REFERENCE = "HAProxy leastconn"


@dataclass
class Row:
    label: str
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    #: Share of the requests that backend 0 answered (slow from the start; over the whole run)
    #: and that backend 1 answered after it slowed down (from --slow-after to the end).
    slow0_share: float
    slow1_share: float
    #: CPU (utime + stime) per request, microseconds: the proxy's process tree, and the four
    #: backends together. Less noisy than req/s on a shared machine (waiting for a core is
    #: not counted).
    proxy_cpu_us: float = 0.0
    backends_cpu_us: float = 0.0


def _get(port: int, path: str) -> bytes:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        body = response.read()
    finally:
        conn.close()
    if response.status != 200:
        raise RuntimeError(f"GET {path} on port {port}: {response.status} {body[:200]!r}")
    return body


def set_latency(port: int, ms: int) -> None:
    _get(port, f"/latency?ms={ms}")


def served(port: int) -> int:
    stats: dict[str, int] = json.loads(_get(port, "/stats"))
    return stats["requests"]


def start_lb(
    procs: Procs,
    tmp: Path,
    label: str,
    strategy: str,
    backends: list[int],
    ewma: Variant,
    src: Path | None = None,
) -> Running:
    """lb as ``proxies.start`` runs it, with a ``[pools.bench.peak_ewma]`` table when ``ewma``
    sets something, and a longer wait for its banner (a loaded machine can take more than 20 s
    to start it); from the checkout ``src`` (its ``.venv``) when given."""
    name = label.replace(" ", "-").replace("(", "").replace(")", "")
    port = free_port()
    conf = configs.lb(tmp, name, mode="http", port=port, backends=backends, strategy=strategy)
    if ewma:
        with conf.open("a") as fh:
            fh.write("\n[pools.bench.peak_ewma]\n")
            fh.writelines(f"{key} = {value}\n" for key, value in ewma)
    log = tmp / f"lb-{name}.log"
    python = sys.executable if src is None else str(src / ".venv" / "bin" / "python")
    proc = procs.start([python, "-m", "lb", "run", "-c", str(conf)], log, cwd=src or ROOT)
    wait_log(log, "lb: running", proc, timeout=90)
    wait_port(port)
    return Running("lb", port, proc)


def parse_variants(spec: str) -> list[Variant]:
    """``"default,choices=3,decay=2s+choices=3"``: one lb peak_ewma row each, with those
    ``[pools.NAME.peak_ewma]`` settings (``default``: none). Values are TOML (durations are
    quoted for it)."""
    variants: list[Variant] = []
    for item in spec.split(","):
        item = item.strip()
        if item in ("", "default"):
            variants.append(())
            continue
        pairs = []
        for setting in item.split("+"):
            key, sep, value = setting.partition("=")
            if not sep or not key or not value:
                raise ValueError(f"{setting!r} is not KEY=VALUE")
            pairs.append((key, value if value.isdigit() else f'"{value}"'))
        variants.append(tuple(pairs))
    return variants


def contenders(
    variants: list[Variant], old: bool = False, others: str | None = None
) -> list[tuple[str, str, str, Variant]]:
    """(row label, proxy, strategy, peak_ewma settings), in table order: one lb peak_ewma row
    per variant (and one lb-old row per variant, after each, with ``old``), then the others
    (those whose label contains one of the comma-separated words of ``others``, if given)."""
    rows: list[tuple[str, str, str, Variant]] = []
    for v in variants:
        shown = ", ".join(f"{k} {val.strip(chr(34))}" for k, val in v)
        label = f"lb peak_ewma ({shown})" if v else "lb peak_ewma"
        rows.append((label, "lb", "peak_ewma", v))
        if old:
            rows.append((label.replace("lb", "lb-old", 1), "lb-old", "peak_ewma", v))
    words = [w.strip().lower() for w in others.split(",") if w.strip()] if others else None
    return rows + [
        (label, proxy, strategy, ())
        for label, proxy, strategy in OTHERS
        if words is None or any(w in label.lower() for w in words)
    ]


def one_run(
    procs: Procs,
    tmp: Path,
    label: str,
    proxy: str,
    strategy: str,
    ewma: Variant,
    backends: list[int],
    args: argparse.Namespace,
    backend_pids: list[int],
) -> Row:
    for port in backends:
        set_latency(port, 0)
    if proxy in ("lb", "lb-old"):
        src = args.lb_old if proxy == "lb-old" else None
        running = start_lb(procs, tmp, label, strategy, backends, ewma, src)
    else:
        running = start(
            procs, tmp, proxy, name=label.replace(" ", "-"), mode="http", backends=backends,
            strategy=strategy,
        )  # fmt: skip
    try:
        _get(running.port, "/")  # through the proxy: it works before it is measured
        before = [served(p) for p in backends]
        set_latency(backends[0], args.latency)
        at_switch: list[int] = []

        def slow_down_second() -> None:
            at_switch.extend(served(p) for p in backends)
            set_latency(backends[1], args.latency)

        second = threading.Timer(args.slow_after, slow_down_second)
        proxy_pid = running.proc.pid if running.proc is not None else 0
        cpu_before = tree_cpu_seconds(proxy_pid) if proxy_pid else 0.0
        backends_before = sum(tree_cpu_seconds(p) for p in backend_pids)
        second.start()
        try:
            result = wrk.run(
                port=running.port,
                path="/",
                connections=args.connections,
                threads=1,
                duration=args.duration,
                lua=wrk.script(tmp, None),
            )
        finally:
            second.cancel()
            second.join()
        proxy_cpu = tree_cpu_seconds(proxy_pid) - cpu_before if proxy_pid else 0.0
        backends_cpu = sum(tree_cpu_seconds(p) for p in backend_pids) - backends_before
        after = [served(p) for p in backends]
    finally:
        if running.proc is not None:  # (stop_all would kill it too, at the very end)
            running.proc.terminate()
            running.proc.wait(15)
            procs.procs.remove(running.proc)
    counts = [a - b for a, b in zip(after, before, strict=True)]
    # Backend 1's share from the moment it slowed down (the whole run when the timer did not
    # fire, which --slow-after <= --duration rules out).
    late = [a - b for a, b in zip(after, at_switch or before, strict=True)]
    return Row(
        label,
        result.rps,
        result.p50_ms,
        result.p99_ms,
        result.errors,
        counts[0] / (sum(counts) or 1),
        late[1] / (sum(late) or 1),
        proxy_cpu / (result.requests or 1) * 1e6,
        backends_cpu / (result.requests or 1) * 1e6,
    )


def median_row(rows: list[Row]) -> Row:
    """Per field, the median over rounds."""
    return Row(
        rows[0].label,
        statistics.median(r.rps for r in rows),
        statistics.median(r.p50_ms for r in rows),
        statistics.median(r.p99_ms for r in rows),
        sum(r.errors for r in rows),
        statistics.median(r.slow0_share for r in rows),
        statistics.median(r.slow1_share for r in rows),
        statistics.median(r.proxy_cpu_us for r in rows),
        statistics.median(r.backends_cpu_us for r in rows),
    )


def table(rows: list[Row]) -> str:
    ref = next((r for r in rows if r.label == REFERENCE), None)
    lines = [
        "| proxy | req/s | p50 ms | p99 ms | p99 / HAProxy's | req/s / HAProxy's "
        "| slow backend 0's share | slow backend 1's share, once slow | errors "
        "| proxy CPU µs/req | backends' CPU µs/req |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        p99_ratio = f"{r.p99_ms / ref.p99_ms:.2f}x" if ref and ref.p99_ms else "n/a"
        rps_ratio = f"{r.rps / ref.rps:.2f}x" if ref and ref.rps else "n/a"
        lines.append(
            f"| {r.label} | {r.rps:,.0f} | {r.p50_ms:.2f} | {r.p99_ms:.2f} | {p99_ratio} "
            f"| {rps_ratio} | {r.slow0_share:.1%} | {r.slow1_share:.1%} | {r.errors} "
            f"| {r.proxy_cpu_us:.1f} | {r.backends_cpu_us:.1f} |"
        )
    return "\n".join(lines)


def chart(path: Path, rows: list[Row], latency_ms: int = 20, slow_after: float = 10.0) -> bool:
    """p99, req/s and the slow backends' shares side by side, with the issue's target marked
    (half of HAProxy's p99, 0.9x its req/s); matplotlib from the ``bench`` extra (False
    without it)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    labels = [r.label for r in rows]
    colors = [
        "#2ca02c" if r.label.startswith("nginx")
        else "#ff7f0e" if r.label.startswith("HAProxy")
        else "#1f77b4"
        for r in rows
    ]  # fmt: skip
    ref = next((r for r in rows if r.label == REFERENCE), None)
    fig, (left, middle, right) = plt.subplots(1, 3, figsize=(15, 4))
    left.barh(labels, [r.p99_ms for r in rows], color=colors)
    left.set_xlabel("p99 latency, ms (lower is better)")
    middle.barh(labels, [r.rps for r in rows], color=colors)
    middle.set_xlabel("requests/s (higher is better)")
    if ref is not None and ref.p99_ms and ref.rps:
        left.axvline(ref.p99_ms / 2, color="black", linestyle="--", linewidth=1)
        left.text(ref.p99_ms / 2, -0.6, " target: <= half HAProxy's", fontsize=8, va="top")
        middle.axvline(ref.rps * 0.9, color="black", linestyle="--", linewidth=1)
        middle.text(ref.rps * 0.9, -0.6, " target: >= 0.9x HAProxy's", fontsize=8, va="top")
    height = 0.4
    ys = range(len(rows))
    right.barh(
        [y - height / 2 for y in ys], [100 * r.slow0_share for r in rows], height, color=colors
    )
    right.barh(
        [y + height / 2 for y in ys], [100 * r.slow1_share for r in rows], height, color=colors,
        alpha=0.45,
    )  # fmt: skip
    right.set_xscale("symlog", linthresh=0.1, linscale=0.5)
    right.set_xlim(0, 100)
    right.set_xticks([0, 0.1, 1, 10, 100])
    right.set_xticklabels(["0", "0.1", "1", "10", "100"])
    right.set_xlabel("slow backends' share of requests, % (lower is better)")
    right.set_title("dark: backend 0, whole run; light: backend 1, once slow", fontsize=9)
    for ax in (left, middle, right):
        ax.set_yticks(list(ys))
        ax.set_yticklabels(labels if ax is left else [])
        ax.invert_yaxis()
    fig.suptitle(
        f"4 backends, one {latency_ms} ms slower from the start, a second one after "
        f"{slow_after:g} s"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=1, help="runs per proxy (medians reported)")
    ap.add_argument("--duration", type=float, default=20.0, help="seconds of wrk per run")
    ap.add_argument("--slow-after", type=float, default=10.0, help="when backend 1 slows down")
    ap.add_argument("--latency", type=int, default=20, help="ms the slow backends add")
    ap.add_argument("--connections", type=int, default=32, help="wrk connections")
    ap.add_argument(
        "--ewma",
        default="default,choices=3",
        help="lb peak_ewma rows, comma-separated: 'default' or KEY=VALUE[+KEY=VALUE] of "
        "[pools.NAME.peak_ewma], e.g. default,choices=3,decay=2s",
    )
    ap.add_argument(
        "--lb-old",
        type=Path,
        help="another checkout (with its .venv): its lb peak_ewma rows too, for a before/after",
    )
    ap.add_argument(
        "--others",
        help="keep only these other rows, comma-separated words of their labels "
        "(haproxy,nginx,least_conn,round_robin; default all)",
    )
    ap.add_argument("--out", type=Path, help="directory for results.json, table.md, chart.png")
    args = ap.parse_args(argv)
    for name in ("rounds", "duration", "connections"):
        if getattr(args, name) <= 0:
            ap.error(f"--{name} must be > 0")
    if not 0 <= args.slow_after <= args.duration:
        ap.error("--slow-after must be between 0 and --duration")
    try:
        rows_order = contenders(parse_variants(args.ewma), args.lb_old is not None, args.others)
    except ValueError as exc:
        ap.error(f"--ewma: {exc}")
    raise_nofile()
    out = args.out or Path(tempfile.mkdtemp(prefix="lb-heterogeneous-"))
    out.mkdir(parents=True, exist_ok=True)
    procs = Procs()
    rows: dict[str, list[Row]] = {label: [] for label, _, _, _ in rows_order}
    try:
        with tempfile.TemporaryDirectory(prefix="lb-het-") as tmp_name:
            tmp = Path(tmp_name)
            backends = free_ports(BACKENDS)
            backend_pids = []
            for i, port in enumerate(backends):
                backend = procs.start(
                    [sys.executable, "-m", "lb.demo_server", "--port", str(port),
                     "--name", f"b{i}"],
                    tmp / f"backend-{i}.log",
                )  # fmt: skip
                backend_pids.append(backend.pid)
            for port in backends:
                wait_port(port)
            for n in range(args.rounds):
                for label, proxy, strategy, ewma in rows_order:
                    row = one_run(
                        procs, tmp, label, proxy, strategy, ewma, backends, args, backend_pids
                    )
                    rows[label].append(row)
                    print(
                        f"round {n + 1} {label}: {row.rps:,.0f} req/s, p50 {row.p50_ms:.2f} ms,"
                        f" p99 {row.p99_ms:.2f} ms, slow shares {row.slow0_share:.1%} / "
                        f"{row.slow1_share:.1%}, errors {row.errors}, CPU/req proxy "
                        f"{row.proxy_cpu_us:.1f} µs, backends {row.backends_cpu_us:.1f} µs",
                        flush=True,
                    )
                    time.sleep(0.5)
    finally:
        procs.stop_all()
    medians = [median_row(rs) for rs in rows.values()]
    text = table(medians)
    print()
    print(text)
    (out / "table.md").write_text(text + "\n")
    (out / "results.json").write_text(
        json.dumps(
            {
                "args": {k: str(v) for k, v in vars(args).items()},
                "rounds": {label: [asdict(r) for r in rs] for label, rs in rows.items()},
                "medians": [asdict(r) for r in medians],
            },
            indent=2,
        )
    )
    if chart(out / "chart.png", medians, args.latency, args.slow_after):
        print(f"chart: {out / 'chart.png'}")
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

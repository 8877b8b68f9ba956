"""The strategy sweep measures each strategy beside lb's own round robin in the same run
(``benchmarks.suite.measured``), and a proxy's figure is the median of its rounds."""

from __future__ import annotations

from benchmarks import scenarios, suite, wrk


def test_a_strategy_row_runs_lb_round_robin_right_after_lb() -> None:
    sc = scenarios.SCENARIOS["least_conn-100"]
    assert suite.measured(sc, ["lb", "haproxy", "nginx"]) == [
        "lb",
        suite.REFERENCE,
        "haproxy",
        "nginx",
    ]
    assert suite.measured(sc, ["haproxy", "lb"]) == ["haproxy", "lb", suite.REFERENCE]


def test_no_reference_for_round_robin_itself_nor_outside_the_sweep_nor_without_lb() -> None:
    assert suite.measured(scenarios.SCENARIOS["round_robin-10"], ["lb", "haproxy"]) == [
        "lb",
        "haproxy",
    ]
    assert suite.measured(scenarios.SCENARIOS["l7"], ["lb", "haproxy"]) == ["lb", "haproxy"]
    assert suite.measured(scenarios.SCENARIOS["weighted-10"], ["haproxy"]) == ["haproxy"]


def _run(rps: float) -> wrk.WrkResult:
    return wrk.WrkResult(
        rps=rps,
        p50_ms=1.0,
        p99_ms=rps / 1000,
        mean_ms=1.0,
        max_ms=2.0,
        requests=int(rps * 3),
        errors=0,
        peak_rss_kib=0,
    )


def test_a_proxy_figure_is_the_median_round() -> None:
    runs = suite.ProxyRuns("lb", [_run(10_000), _run(50_000), _run(52_000)])
    assert runs.rps == 50_000  # one disturbed round does not drag it down (the mean: 37,333)
    assert runs.p99_ms == 50.0

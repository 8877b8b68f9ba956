"""The scaler's Prometheus exposition (``lb-scaler run --metrics HOST:PORT``, off by default).

Owns: a custom collector that reads every pool's status on each scrape (no second copy of the
state), and the small aiohttp server that serves it on ``GET /metrics``. Never does: change
anything, or label a series with a token (an lb instance is labelled by its name).

Series (``pool`` on every one; ``lb`` is the instance's name, ``local`` for the control socket):

* ``lb_scaler_members`` current members (those being removed excluded),
  ``lb_scaler_desired_members`` the last decision's count (absent before the first decision),
  ``lb_scaler_removing_members``, ``lb_scaler_demand`` (summed over the lb instances);
* ``lb_scaler_lb_reachable{lb}`` 1/0, ``lb_scaler_lb_in_step{lb}`` 1/0,
  ``lb_scaler_lb_out_of_step_seconds{lb}`` (0 when in step), ``lb_scaler_lb_resyncs_total{lb}``;
* ``lb_scaler_actions_total{kind}``: member_started, member_removed, drain_timeout,
  drain_unreachable, deregistered, adopted, lb_unreachable, lb_in_step, error, ...
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from aiohttp import web
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import CollectorRegistry


class ScalerCollector:
    def __init__(self, pools: Callable[[], list[dict[str, Any]]]) -> None:
        self.pools = pools  # every pool's status(), read at scrape time

    def collect(self) -> Iterator[Metric]:
        pools = self.pools()
        now = time.time()
        g = {
            name: GaugeMetricFamily(f"lb_scaler_{name}", doc, labels=["pool"])
            for name, doc in (
                ("members", "members of the pool (those being removed excluded)"),
                ("desired_members", "the count the last decision asked for"),
                ("removing_members", "members being drained and removed"),
                ("demand", "in flight + queued + held, summed over the lb instances"),
            )
        }
        reachable = GaugeMetricFamily(
            "lb_scaler_lb_reachable",
            "1 if the lb instance answered its last call",
            labels=["pool", "lb"],
        )
        in_step = GaugeMetricFamily(
            "lb_scaler_lb_in_step",
            "1 if the lb instance's pool matches the scaler's members",
            labels=["pool", "lb"],
        )
        out_for = GaugeMetricFamily(
            "lb_scaler_lb_out_of_step_seconds",
            "how long the lb instance has been out of step (0: in step)",
            labels=["pool", "lb"],
        )
        resyncs = CounterMetricFamily(
            "lb_scaler_lb_resyncs",
            "times the lb instance was brought back in step",
            labels=["pool", "lb"],
        )
        actions = CounterMetricFamily(
            "lb_scaler_actions", "the scaler's actions, by kind", labels=["pool", "kind"]
        )
        for p in pools:
            pool = str(p["pool"])
            g["members"].add_metric([pool], float(p.get("current") or 0))
            if p.get("desired") is not None:
                g["desired_members"].add_metric([pool], float(p["desired"]))
            g["removing_members"].add_metric([pool], float(len(p.get("removing") or [])))
            if p.get("demand") is not None:
                g["demand"].add_metric([pool], float(p["demand"]))
            for lb in p.get("lbs") or []:
                labels = [pool, str(lb["name"])]
                reachable.add_metric(labels, 1.0 if lb["reachable"] else 0.0)
                in_step.add_metric(labels, 1.0 if lb["in_step"] else 0.0)
                since = lb.get("since")
                out_for.add_metric(
                    labels, 0.0 if lb["in_step"] or not since else max(0.0, now - since)
                )
                resyncs.add_metric(labels, float(lb.get("resyncs") or 0))
            for kind, n in sorted((p.get("counts") or {}).items()):
                actions.add_metric([pool, kind], float(n))
        yield from g.values()
        yield from (reachable, in_step, out_for, resyncs, actions)


class MetricsServer:
    """``GET /metrics`` on ``bind`` ("HOST:PORT")."""

    def __init__(self, bind: str, pools: Callable[[], list[dict[str, Any]]]) -> None:
        host, _, port = bind.rpartition(":")
        self.host, self.port = host.strip("[]"), int(port)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(ScalerCollector(pools))
        self._runner: web.AppRunner | None = None

    async def _metrics(self, request: web.Request) -> web.Response:
        body = generate_latest(self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


def parse_bind(value: str) -> str:
    """``HOST:PORT`` for ``--metrics``; raises ValueError saying what is expected."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"--metrics {value!r}: expected HOST:PORT, such as 127.0.0.1:9950")
    return value

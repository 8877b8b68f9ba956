"""The ``lb-scaler`` process: one ``PoolScaler`` per ``[[scalers]]`` entry, signals, the lock
and the status file.

SIGTERM or SIGINT (Ctrl-C): every pool finishes the tick in progress (an action under way
completes: a member being started is registered, one being drained is removed), then the
scaler exits 0, leaving its members running and registered. A second signal stops at once;
what was interrupted is finished by the next scaler (removal intents are on disk, started
members are on record before they run).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from pathlib import Path
from typing import Any

from lb.config import Config
from lb.control.client import ControlClientError
from lb.control.service import resolve_path
from scaler import status
from scaler.config import ScalerConfig, run_dir
from scaler.controller import PoolScaler
from scaler.fleet import Instance, open_instances
from scaler.metrics import MetricsServer
from scaler.providers import Provider, ProviderError, make_provider
from scaler.providers.base import cancel_quietly

log = logging.getLogger("scaler")


class Runner:
    def __init__(
        self,
        config: Config,
        config_path: str,
        scalers: list[ScalerConfig],
        metrics: str | None = None,
    ) -> None:
        self.config = config
        self.config_path = config_path
        self.scalers = scalers
        self.run_dir = run_dir(config, config_path)
        self.socket = resolve_path(config_path, config.lb.control_socket)
        self.lock = status.Lock(self.run_dir)
        self.started = time.time()
        self.pools: list[PoolScaler] = []
        self.providers: list[Provider] = []
        self.instances: list[Instance] = []  # every pool's lb clients (closed at the end)
        self.metrics = MetricsServer(metrics, self.statuses) if metrics else None

    def statuses(self) -> list[dict[str, Any]]:
        return [p.status() for p in self.pools]

    def write_status(self, running: bool = True) -> None:
        doc: dict[str, Any] = {
            "pid": os.getpid(),
            "running": running,
            "config": str(Path(self.config_path).resolve()),
            "started": self.started,
            "updated": time.time(),
            "pools": {p.pool: p.status() for p in self.pools},
        }
        try:
            status.write(self.run_dir, doc)
        except OSError as exc:
            log.error("cannot write the status file in %s: %s", self.run_dir, exc.strerror)

    async def open(self) -> None:
        """Take the lock, open every provider and the metrics listener. Raises AlreadyRunning,
        ProviderError, FleetError (a token) or OSError (the metrics address)."""
        self.lock.acquire()
        previous = status.read(self.run_dir)
        for i, sc in enumerate(self.scalers):
            instances = open_instances(sc, i, self.config_path, self.socket)
            self.instances += instances
            provider = make_provider(sc, self.config_path, self.run_dir)
            try:
                await provider.open()
            except ProviderError as exc:
                raise ProviderError(f"scalers pool {sc.pool!r} ({sc.provider}): {exc}") from None
            self.providers.append(provider)
            self.pools.append(
                PoolScaler(
                    sc,
                    provider,
                    instances,
                    resume=status.resume_intents(previous, sc.pool),
                    on_change=self.write_status,
                )
            )
        if self.metrics is not None:
            await self.metrics.start()

    async def close(self) -> None:
        for provider in self.providers:
            with contextlib.suppress(Exception):
                await provider.close()
        if self.metrics is not None:
            await self.metrics.close()
        for inst in self.instances:
            await inst.client.close()
        self.lock.release()

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        runs = [asyncio.create_task(p.run(stop), name=f"scaler {p.pool}") for p in self.pools]
        follows = [asyncio.create_task(p.follow_events()) for p in self.pools]
        follows += [asyncio.create_task(p.follow_demand()) for p in self.pools]
        signals = 0

        def on_signal(name: str) -> None:
            nonlocal signals
            signals += 1
            if signals == 1:
                log.info(
                    "%s: finishing the action in progress, then exiting; members keep running "
                    "and stay registered (again to stop at once)",
                    name,
                    extra={"event": {"event": "scaler_stopping", "signal": name}},
                )
                stop.set()
            else:
                log.warning("%s again: stopping now", name)
                for t in runs:
                    t.cancel()

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal, sig.name)
        try:
            await asyncio.gather(*runs, return_exceptions=True)
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
            for t in follows:
                await cancel_quietly(t)
            for p in self.pools:
                with contextlib.suppress(ControlClientError):
                    await p.publish()
            self.write_status(running=False)
        log.info("stopped", extra={"event": {"event": "scaler_stopped"}})
        return 0

    def banner(self) -> str:
        lines = [f"lb-scaler: running {self.config_path}; lb control socket {self.socket}"]
        for sc, p in zip(self.scalers, self.pools, strict=True):
            lines.append(
                f"  pool {sc.pool}: {sc.settings_text()}, {sc.min}..{sc.max} members, "
                f"{sc.metric} target {sc.target:g}, every {sc.interval:g}s"
            )
            if not p.fleet.single or not sc.local_lb:
                lines.append(
                    "    kept in step on "
                    + ", ".join(f"lb {i.name} ({i.target})" for i in p.fleet.instances)
                )
        if self.metrics is not None:
            lines.append(f"  metrics: http://{self.metrics.host}:{self.metrics.port}/metrics")
        lines.append(f"  status: lb-scaler -c {self.config_path} status")
        return "\n".join(lines)

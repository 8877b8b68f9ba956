"""The data plane: one per worker process (or one in-process with ``workers = 0``).

A ``DataPlane`` receives config and pool state from the supervisor over a ``Bus``, binds its
own listening sockets, relays traffic, and reports counter snapshots about once a second and
failures as they happen. It is never the source of truth for membership, health or admin
state: it only applies what the supervisor sends.

Run as a process: ``python -m lb.worker --bus-fd FD --index I`` (the supervisor does this).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import socket
import sys
from typing import Any

import uvloop

from lb.bus import Bus, Message, PipeBus
from lb.config import Config
from lb.logs import setup_logging
from lb.model import Backend
from lb.proxy.listener import Listener
from lb.proxy.pool import PoolRuntime

log = logging.getLogger("lb.worker")

STATS_INTERVAL = 1.0


class DataPlane:
    def __init__(self, index: int, bus: Bus | None = None) -> None:
        self.index = index
        self.bus: Bus | None = bus
        self.loop = asyncio.get_running_loop()
        self.config: Config | None = None
        self.pools: dict[str, PoolRuntime] = {}
        self.listeners: list[Listener] = []
        self.configured = self.loop.create_future()
        self.stopping = False
        self._stats_handle: asyncio.TimerHandle | None = None

    # -- messages from the supervisor -------------------------------------------------------

    def on_message(self, msg: Message) -> None:
        kind = msg.get("type")
        if kind == "config":
            self._apply_config(Config.model_validate(msg["config"]))
        elif kind == "pools":
            for name, entries in msg["pools"].items():
                pool = self.pools.get(name)
                if pool is not None:
                    pool.apply_snapshot(entries)
            if not self.configured.done():
                self.configured.set_result(None)
        elif kind == "backend":
            pool = self.pools.get(msg["pool"])
            if pool is not None:
                pool.apply_backend(msg["backend"])
        elif kind == "remove":
            pool = self.pools.get(msg["pool"])
            if pool is not None:
                pool.remove(msg["id"])
        else:
            log.warning("unknown bus message %r", kind)

    def _apply_config(self, config: Config) -> None:
        self.config = config
        for name, pool_cfg in config.pools.items():
            existing = self.pools.get(name)
            if existing is None:
                self.pools[name] = PoolRuntime(name, pool_cfg)
            else:
                existing.reconfigure(pool_cfg)
        for listener in self.listeners:
            listener.pool = self.pools[listener.config.pool]

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        await self.configured
        assert self.config is not None
        for lc in self.config.listeners:
            listener = Listener(lc, self.pools[lc.pool], self.loop, self._report_failure)
            await listener.start()
            self.listeners.append(listener)
        self._stats_handle = self.loop.call_later(STATS_INTERVAL, self._send_stats)
        self._send({"type": "ready", "worker": self.index})

    async def stop(self, grace: float) -> None:
        """Stop accepting, let open connections finish for up to ``grace`` seconds."""
        if self.stopping:
            return
        self.stopping = True
        for listener in self.listeners:
            listener.stop_accepting()
        open_conns = sum(listener.active for listener in self.listeners)
        if open_conns:
            log.info(
                "worker %d: waiting up to %.1fs for %d connection(s)", self.index, grace, open_conns
            )
            try:
                async with asyncio.timeout(grace):
                    await asyncio.gather(*(listener.wait_idle() for listener in self.listeners))
            except TimeoutError:
                left = sum(listener.active for listener in self.listeners)
                log.warning("worker %d: grace expired, closing %d connection(s)", self.index, left)
                for listener in self.listeners:
                    listener.abort_all()
        if self._stats_handle is not None:
            self._stats_handle.cancel()
        self._send_stats(reschedule=False)

    # -- reporting --------------------------------------------------------------------------

    def _send(self, msg: Message) -> None:
        if self.bus is not None:
            self.bus.send(msg)

    def _report_failure(
        self, pool: str, backend: Backend, kind: str, exc: BaseException | None
    ) -> None:
        self._send(
            {
                "type": "failure",
                "worker": self.index,
                "pool": pool,
                "id": backend.id,
                "kind": kind,
                "error": _describe(exc),
            }
        )

    def snapshot(self) -> dict[str, Any]:
        listeners = {
            lst.config.name: {
                "accepted": lst.accepted,
                "active": lst.active,
                "rejected": lst.rejected,
                "connect_failures": lst.connect_failures,
                "no_backend": lst.no_backend,
                "idle_timeouts": lst.idle_timeouts,
            }
            for lst in self.listeners
        }
        backends = {
            name: {
                b.id: {
                    "active": b.active,
                    "total": b.total,
                    "connect_failures": b.connect_failures,
                    "bytes_in": b.bytes_in,
                    "bytes_out": b.bytes_out,
                }
                for b in pool.backends.values()
            }
            for name, pool in self.pools.items()
        }
        return {"type": "stats", "worker": self.index, "listeners": listeners, "pools": backends}

    def _send_stats(self, reschedule: bool = True) -> None:
        self._send(self.snapshot())
        if reschedule and not self.stopping:
            self._stats_handle = self.loop.call_later(STATS_INTERVAL, self._send_stats)


def _describe(exc: BaseException | None) -> str:
    if exc is None:
        return ""
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return type(exc).__name__


# -- process entry point ------------------------------------------------------------------


async def _worker_main(bus_fd: int, index: int) -> int:
    loop = asyncio.get_running_loop()
    sock = socket.socket(fileno=bus_fd)
    plane = DataPlane(index)

    done: asyncio.Future[str] = loop.create_future()

    def on_bus_closed() -> None:
        # The supervisor is gone: stop gracefully rather than run unmanaged.
        if not done.done():
            done.set_result("supervisor gone")

    bus = await PipeBus.connect(sock, plane.on_message, on_bus_closed)
    plane.bus = bus

    def on_signal(sig: signal.Signals) -> None:
        if not done.done():
            done.set_result(sig.name)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        await plane.start()
    except OSError as exc:
        bus.send({"type": "fatal", "worker": index, "error": f"cannot bind: {exc}"})
        await asyncio.sleep(0.05)
        bus.close()
        return 2
    why = await done
    log.info("worker %d stopping (%s)", index, why)
    assert plane.config is not None
    await plane.stop(plane.config.lb.grace)
    bus.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="lb.worker")
    p.add_argument("--bus-fd", type=int, required=True)
    p.add_argument("--index", type=int, required=True)
    p.add_argument("--log-format", default="text")
    p.add_argument("--log-level", default="info")
    args = p.parse_args(argv)
    setup_logging(args.log_format, args.log_level, f"worker {args.index}")
    # The loop is created here, after the process started, never inherited from a parent.
    return uvloop.run(_worker_main(args.bus_fd, args.index))


if __name__ == "__main__":
    sys.exit(main())

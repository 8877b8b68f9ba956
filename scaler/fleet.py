"""The lb instances one ``[[scalers]]`` entry keeps in step, seen by the controller as one lb.

Owns: one control client per lb instance (the local control socket, remote admin listeners
with their bearer token), what the scaler knows of each (reachable or not, in step or not, and
since when, with the reason), and the fleet-wide forms of the calls ``PoolScaler`` makes:
register on all, drain on all (and wait until every one says removable), deregister on all,
stats and demand summed over all. Never does: decide (the controller and the policy do), stop
a member (the provider does), or print a token.

Theory of operation
-------------------
An instance is **in step** when the scaler-managed backends of its pool are the ones the
scaler means: every live member registered, nothing registered where no member lives, and the
drains in progress applied. Every call that changes the pool goes to every instance; one that
fails on an instance (unreachable, refused) leaves that instance **out of step**, and an
instance that does not answer is **unreachable** (and out of step: anything may change while
nobody can see it). Each tick the controller resyncs every reachable instance from its own
list of backends (``views``): it registers what is missing, deregisters what no member serves
any more, and a removal in progress drains it again. An instance that restarted comes back
with its own state file, and the resync fills in whatever changed while it was away.

**Removal.** A member is drained on every instance that has it (and on every instance whose
list was not seen, in case it does), then the scaler waits until each one says removable, or
``drain_timeout``. An instance that does not answer is asked again every ``RETRY`` seconds
until ``drain_timeout``: it never blocks a removal for longer. If no instance answers at all
the removal waits for the next tick (without lb the scaler stops nothing). The member is then
stopped and deregistered everywhere that answers; an instance that missed it deregisters it
when it returns (its resync finds a backend that no member serves).

**Demand** is per instance (each lb has its own in-flight requests and its own queue), so the
pool's demand is the sum over the instances, and a backend's in-flight count is the sum of
its counts. Eligible backends are those eligible on at least one instance (one that has not
yet seen a new member's first health check still counts it once another does).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from lb.control.client import ApiError, ControlClient, ControlClientError
from lb.control.models import BackendStats, BackendView, PoolStats
from scaler.config import ScalerConfig, resolve
from scaler.providers.base import MANAGED_BY

RETRY = 0.5  # seconds between two attempts to drain on an instance that does not answer
LOCAL = "local"  # the name of the instance behind [lb] control_socket


class FleetError(Exception):
    """An lb instance cannot be used as configured (a token that cannot be read)."""


class Reporter(Protocol):
    """Where the fleet reports what it did (the controller: logs, status, lb's events)."""

    def action(self, kind: str, message: str, level: int = ..., **fields: Any) -> None: ...

    def _note_error(self, message: str) -> None: ...


@dataclass
class Instance:
    """One lb, and what the scaler knows of it for one pool."""

    name: str
    client: ControlClient
    seen: bool = False  # answered at least once since the scaler started
    reachable: bool | None = None  # None: not asked yet
    down_reason: str = ""
    down_since: float | None = None  # wall clock
    in_step: bool = False
    out_reason: str = "not synced yet"
    out_since: float | None = field(default_factory=time.time)
    known: bool = False  # ``ours`` is the instance's list as of the last look
    ours: dict[str, BackendView] = field(default_factory=dict)  # by address
    demand: tuple[int, int] | None = None  # (demand, eligible) from its demand API
    events_api: bool = True
    resyncs: int = 0  # times it was brought back in step

    @property
    def target(self) -> str:
        """The socket path or URL (never the token)."""
        return str(getattr(self.client, "target", self.name))

    def status(self) -> dict[str, Any]:
        if self.reachable is False:
            state = "unreachable"
        else:
            state = "in step" if self.in_step else "out of step"
        return {
            "name": self.name,
            "target": self.target,
            "state": state,
            "reachable": self.reachable,
            "in_step": self.in_step,
            "since": self.down_since if self.reachable is False else self.out_since,
            "reason": self.down_reason if self.reachable is False else self.out_reason,
            "backends": len(self.ours),
            "resyncs": self.resyncs,
        }


@dataclass
class Drained:
    """What every instance said about one member being drained."""

    registered: bool = False  # some instance had it
    removable: dict[str, bool] = field(default_factory=dict)  # instance name -> removable
    unreachable: dict[str, str] = field(default_factory=dict)  # name -> why, until the deadline
    refused: str = ""  # an instance refused the drain (not 404): try again later
    timeouts: list[str] = field(default_factory=list)  # "lb NAME: 2 active (reason)"
    nobody: bool = False  # no instance answered at all: nothing may be stopped

    @property
    def all_removable(self) -> bool:
        return all(self.removable.values()) and not self.unreachable


class Fleet:
    """The lb instances of one pool. With one instance every message reads as before (no
    instance names), so a single lb is just a fleet of one."""

    def __init__(self, pool: str, instances: Sequence[Instance], report: Reporter) -> None:
        if not instances:
            raise ValueError("a fleet needs at least one lb")
        self.pool = pool
        self.instances = list(instances)
        self.report = report
        self.single = len(self.instances) == 1

    # -- naming -----------------------------------------------------------------------------------

    def on(self, inst: Instance) -> str:
        """`` on lb NAME`` for a message about one instance ("" with a single lb)."""
        return "" if self.single else f" on lb {inst.name}"

    def lb(self, inst: Instance) -> str:
        return "lb" if self.single else f"lb {inst.name}"

    # -- state of an instance ---------------------------------------------------------------------

    def unreachable(self, inst: Instance, exc: Exception) -> None:
        msg = str(exc)
        first = inst.reachable is not False
        inst.known = False
        if inst.in_step:
            self.out_of_step(inst, "was unreachable")
        if first or inst.down_reason != msg:
            if first:
                inst.down_since = time.time()
            inst.reachable = False
            inst.down_reason = msg
            if inst.seen:
                self.report.action(
                    "lb_unreachable",
                    f"{self.lb(inst)} unreachable: {msg}; "
                    + ("waiting" if self.single else "it is resynced when it returns"),
                    logging.WARNING,
                    lb=inst.name,
                )
            else:  # started together with lb (make run): not a problem yet
                logging.getLogger("scaler").info(
                    "%s: waiting for %s (%s)", self.pool, self.lb(inst), msg
                )

    def answered(self, inst: Instance) -> None:
        if inst.reachable is False and inst.seen:
            self.report.action("lb_reachable", f"{self.lb(inst)} reachable again", lb=inst.name)
        inst.reachable = True
        inst.down_reason = ""
        inst.down_since = None
        inst.seen = True

    def out_of_step(self, inst: Instance, why: str) -> None:
        if inst.in_step:
            inst.in_step = False
            inst.out_since = time.time()
        inst.out_reason = why

    def reachable(self) -> list[Instance]:
        return [i for i in self.instances if i.reachable]

    @property
    def down(self) -> str | None:
        """Why no instance can be reached (None: at least one answers, or none was asked)."""
        if any(i.reachable is not False for i in self.instances):
            return None
        if self.single:
            return self.instances[0].down_reason
        return "; ".join(f"lb {i.name}: {i.down_reason}" for i in self.instances)

    @property
    def seen(self) -> bool:
        return any(i.seen for i in self.instances)

    def registered(self, address: str) -> list[str]:
        return [i.name for i in self.instances if address in i.ours]

    # -- reads ------------------------------------------------------------------------------------

    async def views(self) -> bool:
        """Each instance's scaler-managed backends (``Instance.ours``). False if none answered
        (or one refused the pool: the scaler's config does not match that lb's)."""

        async def one(inst: Instance) -> bool:
            try:
                view = await inst.client.backends(self.pool)
            except ApiError as exc:
                self.answered(inst)
                inst.known = False  # its list is not known: nothing is changed there
                self.out_of_step(inst, f"refused the pool: {exc.message}")
                self.report._note_error(
                    f"{self.lb(inst)}: {exc.message} (is [scalers] pool {self.pool!r} in "
                    "lb's config?)"
                )
                return False
            except ControlClientError as exc:
                self.unreachable(inst, exc)
                return False
            self.answered(inst)
            inst.ours = {
                b.address: b for b in view.backends if b.metadata.get("managed-by") == MANAGED_BY
            }
            inst.known = True
            return True

        got = await asyncio.gather(*(one(i) for i in self.instances))
        return any(got)

    async def stats(self, window: float) -> tuple[dict[str, BackendStats], int, int | None] | None:
        """Backend stats by address, eligible backends and in-flight requests, over every
        instance that answers; None if none does. Raises ApiError if one refused."""

        async def one(inst: Instance) -> PoolStats | None:
            try:
                st = await inst.client.stats(self.pool, window=window)
            except ControlClientError as exc:
                self.unreachable(inst, exc)
                return None
            self.answered(inst)
            return st.pools.get(self.pool)

        got = await asyncio.gather(*(one(i) for i in self.instances), return_exceptions=True)
        for g in got:
            if isinstance(g, BaseException):
                raise g
        if all(i.reachable is False for i in self.instances):
            return None
        pools = [g for g in got if isinstance(g, PoolStats)]
        return merge_stats(pools)

    async def demand(self) -> int:
        """The pool's demand summed over every instance that answers. Raises ApiError (one
        refused, or has no demand API) and ControlClientError (none answered)."""

        async def one(inst: Instance) -> int | None:
            try:
                return (await inst.client.demand(self.pool)).demand
            except ControlClientError:
                return None  # its stats just answered: a blip; the others count

        got = await asyncio.gather(*(one(i) for i in self.reachable()))
        counts = [g for g in got if g is not None]
        if not counts:
            raise ControlClientError("no lb answered the demand call")
        return sum(counts)

    def demand_now(self) -> tuple[int, int]:
        """(demand, eligible) from the instances' demand watchers: the demand summed; eligible
        from the instances with demand (the fewest: one with demand and nothing eligible is
        a pool at zero there), else the most."""
        known = [i.demand for i in self.instances if i.demand is not None]
        if not known:
            return 0, 0
        total = sum(d for d, _ in known)
        busy = [e for d, e in known if d > 0]
        return total, (min(busy) if busy else max(e for _, e in known))

    # -- writes -----------------------------------------------------------------------------------

    async def register(
        self,
        address: str,
        weight: int,
        metadata: dict[str, str],
        what: str,
        on: Sequence[Instance] | None = None,
    ) -> list[Instance]:
        """Register ``address`` on ``on`` (default: every instance not known to be away; all
        of them if none is). Returns where it is now."""

        async def one(inst: Instance) -> bool:
            try:
                added = await inst.client.add_backend(self.pool, address, weight, metadata=metadata)
            except ControlClientError as exc:
                self.unreachable(inst, exc)
                self.report._note_error(
                    f"cannot register {what}{self.on(inst)}: {exc}; it runs, and the next "
                    "tick registers it"
                )
                return False
            except ApiError as exc:
                self.out_of_step(inst, f"refused {address}: {exc.message}")
                self.report._note_error(f"{self.lb(inst)} refused {what}: {exc.message}")
                return False
            inst.ours[address] = added.backend
            return True

        if on is None:
            # One known to be away is left to its resync when it returns (no error per member).
            on = [i for i in self.instances if i.reachable is not False] or self.instances
        targets = list(on)
        got = await asyncio.gather(*(one(i) for i in targets))
        return [i for i, ok in zip(targets, got, strict=True) if ok]

    async def deregister(
        self, inst: Instance, address: str, *, force: bool
    ) -> Literal["removed", "absent", "failed"]:
        try:
            await inst.client.remove(self.pool, address, force=force)
        except ApiError as exc:
            inst.ours.pop(address, None)
            if exc.status == 404:
                return "absent"
            self.out_of_step(inst, f"refused to deregister {address}: {exc.message}")
            self.report._note_error(f"cannot deregister {address}{self.on(inst)}: {exc.message}")
            return "failed"
        except ControlClientError as exc:
            self.unreachable(inst, exc)
            return "failed"
        inst.ours.pop(address, None)
        return "removed"

    async def deregister_all(self, address: str, forced: Callable[[str], bool]) -> None:
        """Deregister ``address`` everywhere (``forced(name)``: close its connections there);
        an instance that misses it deregisters it on its resync."""
        where = [i for i in self.instances if address in i.ours or not i.known]
        await asyncio.gather(*(self.deregister(i, address, force=forced(i.name)) for i in where))

    async def drain(self, address: str, within: float, clock: Callable[[], float]) -> Drained:
        """Drain ``address`` on every instance that has it (or whose list is unknown), and wait
        until each says removable, or ``within`` seconds; see the module's "Removal"."""
        out = Drained()
        targets = [i for i in self.instances if address in i.ours or not i.known]
        deadline = clock() + within

        async def drain_once(inst: Instance) -> bool | None:
            """True: drained; False: not there, or refused; None: no answer."""
            try:
                await inst.client.drain(self.pool, address)
            except ApiError as exc:
                self.answered(inst)
                inst.ours.pop(address, None)
                if exc.status != 404:
                    out.refused = f"{exc.message}{self.on(inst)}"
                return False
            except ControlClientError as exc:
                self.unreachable(inst, exc)
                return None
            self.answered(inst)
            out.registered = True
            return True

        async def follow(inst: Instance, drained: bool | None) -> None:
            while True:
                if drained is False:
                    return
                if drained is None:
                    if clock() >= deadline:
                        out.unreachable[inst.name] = inst.down_reason
                        return
                    await asyncio.sleep(min(RETRY, max(0.0, deadline - clock())))
                    drained = await drain_once(inst)
                    continue
                try:
                    res = await inst.client.wait_removable(
                        self.pool, address, within=max(0.0, deadline - clock())
                    )
                except ApiError as exc:
                    if exc.status != 404:
                        out.refused = f"{exc.message}{self.on(inst)}"
                    return
                except ControlClientError as exc:  # restarted meanwhile: drain it again
                    self.unreachable(inst, exc)
                    drained = None
                    continue
                out.removable[inst.name] = res.removable
                if not res.removable:
                    who = "" if self.single else f"lb {inst.name}: "
                    out.timeouts.append(f"{who}{res.active} active ({res.reason})")
                return

        first = await asyncio.gather(*(drain_once(i) for i in targets))
        if targets and all(r is None for r in first):
            # Nobody answers: nothing may be stopped; the next tick tries again.
            out.nobody = True
            out.unreachable = {i.name: i.down_reason for i in targets}
            return out
        await asyncio.gather(*(follow(i, r) for i, r in zip(targets, first, strict=True)))
        if out.unreachable:
            out.registered = True  # it may be registered there: said so, and resynced later
        return out

    def forget(self, address: str) -> None:
        for inst in self.instances:
            inst.ours.pop(address, None)

    async def post_events(self, path: str, body: dict[str, Any], seconds: float) -> str:
        """Best effort, to every instance that takes events. Returns "sent", "retry" (no
        instance took them: keep them) or "off" (no instance has the events API)."""

        async def one(inst: Instance) -> bool:
            try:
                await inst.client.request("POST", path, body=body, seconds=seconds)
            except ApiError as exc:
                if exc.status == 404 and exc.field == "path":
                    inst.events_api = False
                    logging.getLogger("scaler").warning(
                        "%s: %s has no events API (older lb?); not publishing there",
                        self.pool,
                        self.lb(inst),
                    )
                else:
                    logging.getLogger("scaler").warning(
                        "%s: %s refused the events: %s", self.pool, self.lb(inst), exc.message
                    )
                return True
            except ControlClientError:
                return False
            return True

        targets = [i for i in self.instances if i.events_api]
        if not targets:
            return "off"
        got = await asyncio.gather(*(one(i) for i in targets))
        if not any(i.events_api for i in self.instances):
            return "off"
        return "sent" if any(got) else "retry"

    # -- after a reconcile -------------------------------------------------------------------------

    def synced(self, inst: Instance, changes: list[str]) -> None:
        """``inst`` was just made to match the scaler's intent (``changes``: what it took)."""
        if not inst.in_step:
            was = inst.out_reason
            inst.in_step = True
            inst.out_reason = ""
            inst.out_since = None
            if was != "not synced yet":  # not the first sync: it had been in step
                inst.resyncs += 1
                if not self.single:
                    self.report.action(
                        "lb_in_step",
                        f"lb {inst.name} in step again ({was or 'out of step'}): "
                        + ("; ".join(changes) if changes else "nothing to change"),
                        lb=inst.name,
                    )

    def status(self) -> list[dict[str, Any]]:
        return [i.status() for i in self.instances]


def merge_stats(
    pools: Sequence[PoolStats],
) -> tuple[dict[str, BackendStats], int, int | None]:
    """Stats of one pool from several instances: counts and rates summed, the worst latency,
    a backend drained anywhere is drained, eligible anywhere (and drained nowhere) is eligible;
    the pool's eligible count is of the merged backends."""
    merged: dict[str, BackendStats] = {}
    for ps in pools:
        for b in ps.backends.values():
            have = merged.get(b.address)
            merged[b.address] = b if have is None else _merge_backend(have, b)
    eligible = sum(1 for b in merged.values() if b.eligible)
    in_flight = sum(ps.in_flight for ps in pools) if pools else None
    return merged, eligible, in_flight


def _merge_backend(a: BackendStats, b: BackendStats) -> BackendStats:
    lat = a.latency_ms
    if b.latency_ms is not None and (lat is None or b.latency_ms.p95 > lat.p95):
        lat = b.latency_ms
    admin = a.admin if a.admin != "ready" else b.admin
    health = a.health if a.eligible or not b.eligible else b.health
    return a.model_copy(
        update={
            "admin": admin,
            "health": health,
            "eligible": (a.eligible or b.eligible) and admin == "ready",
            "in_flight": a.in_flight + b.in_flight,
            "connections": a.connections + b.connections,
            "total": a.total + b.total,
            "rate": a.rate + b.rate,
            "errors": a.errors + b.errors,
            "error_rate": max(a.error_rate, b.error_rate),
            "latency_ms": lat,
        }
    )


def open_instances(
    sc: ScalerConfig, index: int, config_path: str | Path, local_socket: Path
) -> list[Instance]:
    """The lb instances of ``scalers[index]``, with their clients: the local control socket
    (unless ``local_lb = false``), then each of ``lbs`` with its token read now. Raises
    FleetError naming the field when a token cannot be had."""
    out = [Instance(LOCAL, ControlClient(local_socket, timeout=10.0))] if sc.local_lb else []
    for j, lb in enumerate(sc.lbs):
        where = f"scalers[{index}].lbs[{j}]"
        if lb.token_file is not None:
            path = resolve(config_path, lb.token_file)
            try:
                token = path.read_text().strip()
            except (OSError, UnicodeDecodeError) as exc:
                why = exc.strerror if isinstance(exc, OSError) else "not text"
                raise FleetError(f"{where}.token_file: cannot read {path}: {why}") from None
            if not token:
                raise FleetError(f"{where}.token_file: {path} is empty")
        else:
            assert lb.token_env is not None
            token = os.environ.get(lb.token_env, "").strip()
            if not token:
                raise FleetError(
                    f"{where}.token_env: the environment variable {lb.token_env} is unset or empty"
                )
        out.append(Instance(lb.label, ControlClient(url=lb.url, token=token, timeout=10.0)))
    return out

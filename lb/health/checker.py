"""Active health checks: probe each backend over TCP or HTTP, from the supervisor only.

Owns: one asyncio task per checked backend, the probes, and the aiohttp session they share.
Never does: run in a worker, or decide anything itself. Each result goes through
``ClusterState.record_check`` and the pure rules in ``lb.health_rules``; a transition goes
through ``ClusterState.set_health`` with a cause such as
``3 failed HTTP checks (connection refused)``, which logs it and tells the workers.

Theory of operation
-------------------
``sync`` reconciles the tasks with the state: a task for every backend of every pool with a
``health`` section, none for anything else. The supervisor also calls ``ensure`` and
``cancel`` from its change hooks, so a backend added or removed at runtime starts or stops
its checks at once; ``sync`` runs periodically as well, which catches config reloads.

A task's first check comes after a short random delay (up to ``jitter`` of
``fast_interval``), so a new backend is usable quickly and checks of many backends do not
start in step. After that, checks start ``next_delay`` apart (start to start, so a slow check
does not stretch the period); a task reads its pool's config before every check, so a reload
takes effect on the next one.

Probes:

* ``tcp``: a connect within ``timeout``; the connection is closed at once.
* ``http``: a new connection per check (no keep-alive, so every check also proves that the
  backend accepts connections), one request (``method``, ``path``, ``Host``), the status must
  be in ``expect_status`` and, if set, the first 64 KiB of the body must contain
  ``expect_body``; all within ``timeout``. A backend that accepts connections but never
  answers (frozen, overloaded) fails with ``timeout after 250ms waiting for the response``.

Why aiohttp for the HTTP probe: it is the project's designated control-plane HTTP client (see
DESIGN.md), it is already a dependency, and it parses responses correctly (chunked bodies,
compression, malformed heads) with exception types that map onto readable causes. Its
per-request cost (well under a millisecond) is irrelevant at check rates; the data plane never
touches it.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import random
import ssl
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import aiohttp

from lb.config import HealthConfig, PoolConfig
from lb.health_rules import (
    StatusRanges,
    Streaks,
    decide,
    format_seconds,
    next_delay,
    parse_status_ranges,
    status_matches,
    transition_cause,
)
from lb.model import parse_address
from lb.proxyproto import build_v2
from lb.state import ClusterState, ManagedBackend, StateError
from lb.tls import client_context

log = logging.getLogger("lb.health")

USER_AGENT = "lb-health-check/0.1"
MAX_BODY = 64 * 1024  # how much of a response body expect_body searches
V1_UNKNOWN = b"PROXY UNKNOWN\r\n"  # a v1 header for a connection that relays nobody


@dataclass(frozen=True, slots=True)
class CheckResult:
    passed: bool
    detail: str  # "HTTP 200 in 1.2ms", "connection refused", ...


def describe_os_error(exc: OSError) -> str:
    """``connection refused`` rather than asyncio's ``Connect call failed ('127.0.0.1', 1)``."""
    if exc.errno and exc.errno > 0:  # (getaddrinfo's errors are negative: keep their text)
        return os.strerror(exc.errno).lower()
    if exc.strerror:
        return exc.strerror.lower()
    return str(exc) or type(exc).__name__


@functools.lru_cache(maxsize=64)
def _ranges(expect_status: str) -> StatusRanges:
    return parse_status_ranges(expect_status)


# -- probes -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProbeTls:
    """TLS for the checks of a ``tls = true`` pool: its context and the name to verify."""

    context: ssl.SSLContext
    server_name: str | None

    def name(self, host: str) -> str:
        return self.server_name or host


async def tcp_probe(
    address: str, within: float, tls: ProbeTls | None = None, send_proxy: str | None = None
) -> CheckResult:
    """Pass when a TCP connection to ``address`` is established ``within`` seconds (with a
    TLS handshake that verifies, on a ``tls = true`` pool). On a ``send_proxy`` pool the
    connection starts with a PROXY header for a connection of lb's own (v2 ``LOCAL``, v1
    ``UNKNOWN``, as HAProxy's checks send), before the handshake as the traffic's is."""
    loop = asyncio.get_running_loop()
    host, port = parse_address(address)
    started = loop.time()
    try:
        async with asyncio.timeout(within):
            if send_proxy is not None:
                transport, _ = await loop.create_connection(asyncio.Protocol, host, port)
                transport.write(build_v2(None, None) if send_proxy == "v2" else V1_UNKNOWN)
                if tls is not None:
                    try:
                        secure = await loop.start_tls(
                            transport,
                            asyncio.Protocol(),
                            tls.context,
                            server_hostname=tls.name(host),
                        )
                    except BaseException:
                        transport.abort()
                        raise
                    if secure is not None:
                        transport = secure  # closed below with a close_notify
            elif tls is None:
                transport, _ = await loop.create_connection(asyncio.Protocol, host, port)
            else:
                transport, _ = await loop.create_connection(
                    asyncio.Protocol, host, port, ssl=tls.context, server_hostname=tls.name(host)
                )
    except ssl.SSLCertVerificationError as exc:
        return CheckResult(False, f"certificate verification failed: {exc.verify_message}")
    except ssl.SSLError as exc:
        return CheckResult(False, f"TLS handshake failed: {exc.reason or exc}")
    except TimeoutError:
        return CheckResult(False, f"timeout after {format_seconds(within)} connecting")
    except OSError as exc:
        return CheckResult(False, describe_os_error(exc))
    transport.close()
    return CheckResult(True, f"connected in {format_seconds(loop.time() - started)}")


async def _connected(
    session: aiohttp.ClientSession,
    ctx: SimpleNamespace,
    params: aiohttp.TraceConnectionCreateEndParams,
) -> None:
    ctx.trace_request_ctx.connected = True


def new_session() -> aiohttp.ClientSession:
    """The checker's session: a fresh connection per check, our timeouts, no cookies."""
    trace = aiohttp.TraceConfig()
    trace.on_connection_create_end.append(_connected)
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(force_close=True, limit=0, ssl=False),
        timeout=aiohttp.ClientTimeout(total=None),
        cookie_jar=aiohttp.DummyCookieJar(),
        trace_configs=[trace],
        headers={"User-Agent": USER_AGENT},
    )


async def http_probe(
    session: aiohttp.ClientSession, address: str, cfg: HealthConfig, tls: ProbeTls | None = None
) -> CheckResult:
    """One HTTP request to ``address``, judged by ``cfg`` (see the module docstring); over
    TLS, verified as the pool's traffic is, on a ``tls = true`` pool."""
    loop = asyncio.get_running_loop()
    progress = SimpleNamespace(connected=False)
    headers = {"Host": cfg.host or address, "Connection": "close"}
    started = loop.time()
    extra: dict[str, Any] = {}
    scheme = "http"
    if tls is not None:
        scheme = "https"
        extra = {"ssl": tls.context, "server_hostname": tls.name(parse_address(address)[0])}
    try:
        async with asyncio.timeout(cfg.timeout):
            async with session.request(
                cfg.method,
                f"{scheme}://{address}{cfg.path}",
                headers=headers,
                allow_redirects=False,
                trace_request_ctx=progress,
                **extra,
            ) as resp:
                status = resp.status
                body = await resp.content.read(MAX_BODY) if cfg.expect_body else b""
    except TimeoutError:
        phase = "waiting for the response" if progress.connected else "connecting"
        return CheckResult(False, f"timeout after {format_seconds(cfg.timeout)} {phase}")
    except aiohttp.ClientConnectorCertificateError as exc:
        return CheckResult(False, f"certificate verification failed: {exc.certificate_error}")
    except aiohttp.ClientConnectorError as exc:
        return CheckResult(False, describe_os_error(exc.os_error))
    except aiohttp.ServerDisconnectedError:
        return CheckResult(False, "connection closed before a response")
    except aiohttp.ClientPayloadError:
        return CheckResult(False, "response body cut short")
    except aiohttp.ClientResponseError as exc:
        return CheckResult(False, f"bad response: {exc.message}")
    except aiohttp.ClientError as exc:
        return CheckResult(False, f"{type(exc).__name__}: {exc}")
    except OSError as exc:
        return CheckResult(False, describe_os_error(exc))
    took = f"HTTP {status} in {format_seconds(loop.time() - started)}"
    if not status_matches(_ranges(cfg.expect_status), status):
        return CheckResult(False, f"{took}, expected {cfg.expect_status}")
    if cfg.expect_body and cfg.expect_body.encode() not in body:
        return CheckResult(False, f"{took}, body lacks {cfg.expect_body!r}")
    return CheckResult(True, took)


# -- the tasks --------------------------------------------------------------------------------


class ActiveChecker:
    """One check task per backend of every pool that has a ``health`` section."""

    def __init__(self, state: ClusterState, loop: asyncio.AbstractEventLoop) -> None:
        self.state = state
        self.loop = loop
        self.tasks: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._ending: set[asyncio.Task[None]] = set()
        self._session: aiohttp.ClientSession | None = None
        self._rand = random.Random()
        self.stopped = False
        self._tls_contexts: dict[str, tuple[PoolConfig, ProbeTls]] = {}

    # -- membership -------------------------------------------------------------------------

    def _health(self, pool: str) -> HealthConfig | None:
        cfg = self.state.config.pools.get(pool)
        return cfg.health if cfg is not None else None

    def _backend(self, pool: str, backend_id: str) -> ManagedBackend | None:
        backends = self.state.pools.get(pool)
        return backends.get(backend_id) if backends is not None else None

    def sync(self) -> None:
        """Start and stop tasks so that exactly the checked backends have one."""
        if self.stopped:
            return
        wanted = {
            (pool, bid)
            for pool, backends in self.state.pools.items()
            if self._health(pool) is not None
            for bid in backends
        }
        for key in [k for k in self.tasks if k not in wanted]:
            self.cancel(*key)
        for key in wanted:
            if key not in self.tasks:
                self._start(key)

    def ensure(self, pool: str, backend_id: str) -> None:
        key = (pool, backend_id)
        if (
            not self.stopped
            and key not in self.tasks
            and self._health(pool) is not None
            and self._backend(pool, backend_id) is not None
        ):
            self._start(key)

    def cancel(self, pool: str, backend_id: str) -> None:
        task = self.tasks.pop((pool, backend_id), None)
        if task is not None:
            task.cancel()
            self._ending.add(task)
            task.add_done_callback(self._ending.discard)

    def _start(self, key: tuple[str, str]) -> None:
        task = self.loop.create_task(self._run(*key), name=f"health {key[0]}/{key[1]}")
        self.tasks[key] = task

        def done(t: asyncio.Task[None]) -> None:
            if self.tasks.get(key) is t:
                del self.tasks[key]

        task.add_done_callback(done)

    async def stop(self) -> None:
        self.stopped = True
        tasks = [*self.tasks.values(), *self._ending]
        self.tasks.clear()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- one backend ------------------------------------------------------------------------

    async def probe(
        self,
        address: str,
        cfg: HealthConfig,
        tls: ProbeTls | None = None,
        send_proxy: str | None = None,
    ) -> CheckResult:
        if cfg.type == "tcp":
            return await tcp_probe(address, cfg.timeout, tls, send_proxy)
        if self._session is None:
            self._session = new_session()
        return await http_probe(self._session, address, cfg, tls)

    def _tls(self, pool: str) -> ProbeTls | None:
        """A ``tls = true`` pool's checks speak TLS, verified as its traffic is (the context
        is rebuilt when a reload changes the pool)."""
        cfg = self.state.config.pools.get(pool)
        if cfg is None or not cfg.tls:
            self._tls_contexts.pop(pool, None)
            return None
        cached = self._tls_contexts.get(pool)
        if cached is None or cached[0] is not cfg:
            probe_tls = ProbeTls(
                client_context(
                    ca=cfg.tls_ca, verify=cfg.tls_verify, cert=cfg.tls_cert, key=cfg.tls_key
                ),
                cfg.tls_server_name,
            )
            cached = self._tls_contexts[pool] = (cfg, probe_tls)
        return cached[1]

    async def _run(self, pool: str, backend_id: str) -> None:
        cfg = self._health(pool)
        if cfg is None:
            return
        delay = self._rand.random() * cfg.jitter * cfg.fast_interval
        while True:
            await asyncio.sleep(delay)
            cfg = self._health(pool)
            b = self._backend(pool, backend_id)
            if cfg is None or b is None:
                return
            started = self.loop.time()
            try:
                pool_cfg = self.state.config.pools.get(pool)
                send_proxy = pool_cfg.send_proxy if pool_cfg is not None else None
                result = await self.probe(b.address, cfg, self._tls(pool), send_proxy)
            except Exception:
                # A bug in a probe must not end the checks: count it as a failure and go on.
                log.exception("%s: the %s check raised", b.name, cfg.type)
                result = CheckResult(False, "internal error in the health check")
            if self._backend(pool, backend_id) is not b:
                return  # removed (and maybe re-added: its own task checks it) meanwhile
            try:
                self.apply(pool, b, cfg, result)
            except StateError:
                return
            streaks = Streaks(b.checks_passed, b.checks_failed)
            wait = next_delay(
                b.health,
                streaks,
                interval=cfg.interval,
                fast_interval=cfg.fast_interval,
                jitter=cfg.jitter,
                rand=self._rand.random(),
            )
            delay = max(0.0, wait - (self.loop.time() - started))

    def apply(self, pool: str, b: ManagedBackend, cfg: HealthConfig, result: CheckResult) -> None:
        """Record one result and move the backend if a rise/fall threshold is met."""
        self.state.record_check(pool, b.id, result.passed, result.detail)
        streaks = Streaks(b.checks_passed, b.checks_failed)
        if not result.passed:
            log.debug(
                "%s %s check failed (%d in a row): %s",
                b.name,
                cfg.type.upper(),
                streaks.failed,
                result.detail,
            )
        new = decide(b.health, streaks, cfg.rise, cfg.fall)
        if new is not None:
            cause = transition_cause(cfg.type.upper(), b.health, new, streaks, result.detail)
            self.state.set_health(pool, b.id, new, cause, now=self.loop.time())

"""Load and validate ``config.toml`` into typed models.

This module owns the configuration schema and its error messages. A bad file is refused with a
message that names the file, the field path (``pools.web.backends[1].weight``), the bad value
and what would be valid, before anything binds or starts. It never opens sockets.
"""

from __future__ import annotations

import functools
import ipaddress
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from importlib.metadata import entry_points
from pathlib import Path
from typing import Annotated, Any, Literal, cast

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from lb import tls
from lb.health_rules import parse_status_ranges
from lb.model import parse_address

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(us|ms|s|m|h)\s*$")
_UNIT = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


# HAProxy's limit for a timeout (2^31 - 1 ms, about 24.8 days). Beyond it a timer is no timer;
# and inf/nan would not even reach the workers (JSON has neither).
MAX_DURATION = 2_147_483.647


def parse_duration(value: object) -> float:
    """``"150ms"`` -> 0.15. Plain numbers are seconds."""
    if isinstance(value, bool):
        raise ValueError('a duration such as "2s", "150ms" or "1m"')
    if isinstance(value, int | float):
        seconds = float(value)
        if seconds < 0:
            raise ValueError("a duration must not be negative")
    elif isinstance(value, str) and (m := _DURATION.match(value)):
        seconds = float(m.group(1)) * _UNIT[m.group(2)]
    else:
        raise ValueError('a duration such as "2s", "150ms" or "1m" (units: us, ms, s, m, h)')
    if not seconds <= MAX_DURATION:  # (also nan)
        raise ValueError(
            f"a duration must be finite and at most {MAX_DURATION:g}s (about 24.8 days, "
            'as in HAProxy); write e.g. "24h"'
        )
    return seconds


Duration = Annotated[float, BeforeValidator(parse_duration)]

# hold_timeout of a pool that a ``[[scalers]]`` entry with ``min = 0`` manages, unless set.
HOLD_FOR_SCALER = 30.0


def _check_address(value: str) -> str:
    parse_address(value)
    return value


class _Model(BaseModel):
    # (No inf or nan in any float: the supervisor sends the config to its workers as JSON.)
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class LBSection(_Model):
    workers: int | Literal["auto"] = Field(
        default=1, description='0 runs one process; N worker processes; "auto" one per core'
    )
    control_socket: str = "run/lb.sock"
    state_file: str = "run/state.json"
    log_format: Literal["text", "json"] = "text"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    grace: Duration = Field(default=10.0, description="how long SIGTERM waits for open connections")
    cpu_map: Literal["auto"] | list[str] | None = Field(
        default=None,
        description='pin workers to CPUs (HAProxy\'s cpu-map): "auto", one CPU each in turn; '
        'or one CPU list per worker, such as ["0", "1-3"]',
    )

    @field_validator("workers")
    @classmethod
    def _workers(cls, v: int | str) -> int | str:
        if isinstance(v, int) and not 0 <= v <= 256:
            raise ValueError('workers must be 0 (single process), 1-256, or "auto"')
        return v

    @field_validator("cpu_map", mode="before")
    @classmethod
    def _cpu_map(cls, v: object) -> object:
        if isinstance(v, str) and v != "auto":
            raise ValueError('"auto", or one CPU list per worker such as ["0", "1-3"]')
        if isinstance(v, list):  # cpu_map = [0, 1] means ["0", "1"]
            return [str(x) if isinstance(x, int) and not isinstance(x, bool) else x for x in v]
        return v

    @model_validator(mode="after")
    def _cpu_map_entries(self) -> LBSection:
        if not isinstance(self.cpu_map, list):
            return self
        n = max(1, self.worker_count)
        if len(self.cpu_map) != n:
            raise ConfigFieldError(
                "cpu_map",
                self.cpu_map,
                f"{len(self.cpu_map)} CPU list(s) for {n} worker process(es): give one per "
                'worker (the first is worker 1\'s), or "auto"',
                relative=True,
            )
        allowed = usable_cpus()
        for i, text in enumerate(self.cpu_map):
            try:
                cpus = parse_cpu_list(text)
            except ValueError as exc:
                raise ConfigFieldError(f"cpu_map[{i}]", text, str(exc), relative=True) from None
            if not cpus <= allowed:
                raise ConfigFieldError(
                    f"cpu_map[{i}]",
                    text,
                    f"CPU {min(cpus - allowed)} is not one lb may run on here "
                    f'({format_cpu_list(allowed)}): use those, or "auto"',
                    relative=True,
                )
        return self

    @property
    def worker_count(self) -> int:
        if self.workers == "auto":
            return os.cpu_count() or 1
        return int(self.workers)

    def cpus_of(self, index: int) -> frozenset[int] | None:
        """The CPUs worker ``index`` (1-based; 0: the single process) is pinned to, or None."""
        if self.cpu_map is None:
            return None
        slot = max(index, 1) - 1
        if self.cpu_map == "auto":
            allowed = sorted(usable_cpus())
            return frozenset({allowed[slot % len(allowed)]})
        return parse_cpu_list(self.cpu_map[slot])


@functools.cache
def usable_cpus() -> frozenset[int]:
    """The CPUs lb may run on: its affinity (``taskset``, systemd's ``CPUAffinity=``) when it
    first asks, before ``workers = 0`` pins the one process."""
    return frozenset(os.sched_getaffinity(0))


def parse_cpu_list(text: str) -> frozenset[int]:
    """A Linux CPU list, as ``taskset -c`` takes it: ``"0"``, ``"0-3"``, ``"0,2,4-5"``."""
    cpus: set[int] = set()
    for part in text.split(","):
        first, dash, last = part.strip().partition("-")
        if not (first.isdigit() and (not dash or last.isdigit())):
            raise ValueError(f'a CPU list such as "0", "2-3" or "0,2" (not {text!r})')
        lo, hi = int(first), int(last) if dash else int(first)
        if hi < lo:
            raise ValueError(f'a CPU range runs upwards, such as "2-3" (not {part.strip()!r})')
        cpus.update(range(lo, hi + 1))
    return frozenset(cpus)


def format_cpu_list(cpus: frozenset[int]) -> str:
    """``{0, 1, 2, 5}`` as ``"0-2,5"``."""
    out: list[str] = []
    for cpu in sorted(cpus):
        if out and cpu - 1 == int(out[-1].rpartition("-")[2]):
            out[-1] = f"{out[-1].partition('-')[0]}-{cpu}"
        else:
            out.append(str(cpu))
    return ",".join(out)


class RouteConfig(_Model):
    """``[[listeners.routes]]``: the first route whose host and path prefix match picks the pool."""

    host: str | None = Field(
        default=None, description='exact host ("api.example.com") or suffix ("*.example.com")'
    )
    path_prefix: str = "/"
    pool: str

    @field_validator("host")
    @classmethod
    def _host(cls, v: str | None) -> str | None:
        if v is not None and (not v or any(c.isspace() or c == "/" for c in v)):
            raise ValueError('a host such as "api.example.com" or "*.example.com"')
        return v.lower() if v else v

    @field_validator("path_prefix")
    @classmethod
    def _prefix(cls, v: str) -> str:
        if not v.startswith("/"):
            raise ValueError('a path prefix starting with "/", such as "/api/"')
        return v


class CertificateConfig(_Model):
    """One certificate/key pair (PEM; the certificate file may carry its chain)."""

    cert: str = Field(min_length=1, description="PEM certificate (and chain), relative to the file")
    key: str = Field(min_length=1, description="PEM private key (RSA or ECDSA), unencrypted")


_HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")


class ListenerTlsConfig(_Model):
    """``[listeners.tls]``: TLS termination (see docs/config.md, "TLS")."""

    certificates: list[CertificateConfig] = Field(
        min_length=1, description="chosen by SNI from their names; the first is the default"
    )
    min_version: Literal["TLSv1.2", "TLSv1.3"] = "TLSv1.2"
    ciphers: str = Field(
        default=tls.INTERMEDIATE_CIPHERS,
        description="TLS 1.2 ciphers, OpenSSL names; forward-secret AEAD ones only",
    )
    session_tickets: bool = True
    handshake_timeout: Duration = Field(default=10.0, gt=0)
    client_ca: str | None = Field(
        default=None, description="mTLS: verify client certificates against this PEM bundle"
    )
    client_verify: Literal["required", "optional"] = "required"
    client_subject_header: str | None = Field(
        default=None,
        description="http: the verified client subject goes to the backend in this header",
    )
    hsts: str | None = Field(
        default=None, description='http: a Strict-Transport-Security value: "max-age=31536000"'
    )
    watch: bool = Field(
        default=False,
        description="reload when a certificate, key or client_ca file changes (polled)",
    )
    watch_interval: Duration = Field(
        default=5.0, ge=0.1, le=3600.0, description="how often watch looks at the files"
    )

    @field_validator("ciphers")
    @classmethod
    def _ciphers(cls, v: str) -> str:
        tls.check_ciphers(v)
        return v

    @field_validator("client_subject_header")
    @classmethod
    def _subject_header(cls, v: str | None, info: ValidationInfo) -> str | None:
        if v is None:
            return v
        if not _HEADER_NAME.match(v):
            raise ValueError('a header name such as "X-Client-Subject"')
        if info.data.get("client_ca") is None:
            raise ValueError("needs client_ca: only a verified client certificate has a subject")
        return v

    @field_validator("hsts")
    @classmethod
    def _hsts(cls, v: str | None) -> str | None:
        if v is not None and (not re.match(r"^max-age=\d+", v) or any(c in v for c in "\r\n\0")):
            raise ValueError('a header value starting with max-age, e.g. "max-age=31536000"')
        return v


class ListenerConfig(_Model):
    name: str = Field(min_length=1)
    bind: str
    mode: Literal["tcp", "http"] = "tcp"
    pool: str | None = Field(
        default=None, description="the pool (tcp), or the default pool when no route matches"
    )
    # (Timeouts with a deadline are > 0: lb has no "0 means none", unlike HAProxy; 0 would
    # fail every attempt. For "practically none", write a long one such as "24h".)
    connect_timeout: Duration = Field(default=2.0, gt=0)
    idle_timeout: Duration = Field(
        default=60.0, description="tcp: no bytes either way; http: tunnels after an Upgrade"
    )
    max_connections: int = Field(default=10000, ge=1)
    backlog: int = Field(
        default=1024, ge=1, le=2**31 - 1, description="the kernel caps it at net.core.somaxconn"
    )
    # -- http only ---------------------------------------------------------------------------
    routes: list[RouteConfig] = Field(default_factory=list)
    keepalive_timeout: Duration = Field(
        default=15.0, description="an idle client keep-alive connection is closed after this"
    )
    header_timeout: Duration = Field(
        default=10.0, gt=0, description="the whole request head must arrive within this (408)"
    )
    response_timeout: Duration = Field(
        default=60.0, gt=0, description="the backend must start answering within this (504)"
    )
    max_request_line: int = Field(default=8192, ge=64)
    max_header_bytes: int = Field(default=32768, ge=256)
    max_headers: int = Field(default=100, ge=1)
    max_body_bytes: int | None = Field(default=None, ge=0)
    access_log: str | None = Field(
        default=None, description="JSON-lines access log file (relative to the config file)"
    )
    via: str | None = Field(default=None, description='add "Via: 1.1 <this>" when set')
    # -- the edge: TLS and PROXY protocol (docs/config.md, "TLS") ----------------------------
    tls: ListenerTlsConfig | None = None
    proxy_protocol: bool = Field(
        default=False, description="expect a PROXY v1/v2 header on every connection"
    )
    trusted_proxies: list[str] = Field(
        default_factory=list, description="CIDRs allowed to send a PROXY header (and only them)"
    )
    proxy_protocol_timeout: Duration = Field(default=5.0, gt=0)
    redirect_https: bool = Field(
        default=False, description="http: answer every request with a redirect to https://"
    )
    redirect_status: Literal[301, 308] = 308
    redirect_port: int | None = Field(
        default=None, ge=1, le=65535, description="the https port in redirects (none: 443)"
    )

    @field_validator("bind")
    @classmethod
    def _bind(cls, v: str) -> str:
        return _check_address(v)

    @field_validator("trusted_proxies")
    @classmethod
    def _trusted(cls, v: list[str]) -> list[str]:
        for cidr in v:
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError:
                raise ValueError(
                    f'{cidr!r} is not a CIDR; use networks such as "10.0.0.0/8" or "127.0.0.1/32"'
                ) from None
        return v

    @model_validator(mode="after")
    def _edge(self) -> ListenerConfig:
        if self.proxy_protocol and not self.trusted_proxies:
            raise ConfigFieldError(
                "trusted_proxies",
                [],
                "proxy_protocol needs the balancers' addresses: list them as CIDRs",
                relative=True,
            )
        if self.trusted_proxies and not self.proxy_protocol:
            raise ConfigFieldError(
                "trusted_proxies",
                self.trusted_proxies,
                "only used with proxy_protocol = true; set it or remove trusted_proxies",
                relative=True,
            )
        if self.mode == "tcp":
            for field in ("redirect_https",):
                if getattr(self, field):
                    raise ConfigFieldError(field, True, 'needs mode = "http"', relative=True)
            if self.tls is not None and (self.tls.client_subject_header or self.tls.hsts):
                which = "client_subject_header" if self.tls.client_subject_header else "hsts"
                raise ConfigFieldError(
                    f"tls.{which}", "...", 'an HTTP header: needs mode = "http"', relative=True
                )
        if self.redirect_https and self.tls is not None:
            raise ConfigFieldError(
                "redirect_https",
                True,
                "this listener is https already; set redirect_https on the plain http listener",
                relative=True,
            )
        return self


class BackendConfig(_Model):
    address: str
    weight: int = Field(default=1, ge=0, le=1000)
    id: str | None = None
    max_conn: int | None = Field(
        default=None,
        ge=0,
        le=1_000_000,
        description="concurrent requests (http) or connections (tcp); overrides the pool's",
    )

    @field_validator("address")
    @classmethod
    def _address(cls, v: str) -> str:
        return _check_address(v)


_HTTP_ONLY = 'only applies to type = "http"; remove it or set type = "http"'


def _require_http(model: type[BaseModel], info: ValidationInfo, value: object) -> None:
    # Defaults pass: a dumped tcp section (supervisor -> workers) carries them all.
    name = info.field_name
    if info.data.get("type") == "tcp" and name and value != model.model_fields[name].default:
        raise ValueError(_HTTP_ONLY)


class HealthConfig(_Model):
    """``[pools.NAME.health]``: active checks, run once per backend by the supervisor."""

    type: Literal["tcp", "http"] = "tcp"
    interval: Duration = Field(default=2.0, ge=0.01)
    timeout: Duration = Field(default=1.0, gt=0)  # default: min(1s, interval)
    rise: int = Field(default=2, ge=1, le=100)
    fall: int = Field(default=3, ge=1, le=100)
    jitter: float = Field(default=0.1, ge=0.0, le=0.5)
    fast_interval: Duration = Field(default=2.0, ge=0.01)  # default: interval
    method: str = "GET"
    path: str = "/"
    host: str | None = None
    expect_status: str = "200-399"
    expect_body: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _derived_defaults(cls, data: Any) -> Any:
        # Defaults that follow interval, so that setting only ``interval`` stays consistent.
        if isinstance(data, dict) and "interval" in data:
            try:
                interval = parse_duration(data["interval"])
            except ValueError:
                return data  # the interval field reports it
            data = {"timeout": min(1.0, interval), "fast_interval": interval, **data}
        return data

    @field_validator("jitter", mode="before")
    @classmethod
    def _jitter(cls, v: object) -> object:
        if isinstance(v, str):
            raise ValueError("jitter is a fraction of the interval from 0 to 0.5, e.g. 0.1")
        return v

    @field_validator("timeout", "fast_interval")
    @classmethod
    def _within_interval(cls, v: float, info: ValidationInfo) -> float:
        interval = info.data.get("interval")
        if interval is not None and v > interval:
            why = (
                "a check must end before the next one is due"
                if info.field_name == "timeout"
                else "it speeds checks up while a backend changes state"
            )
            raise ValueError(
                f"must not exceed interval ({interval:g}s): {why}; lower it or raise interval"
            )
        return v

    @field_validator("method")
    @classmethod
    def _method(cls, v: str, info: ValidationInfo) -> str:
        _require_http(cls, info, v)
        if not re.fullmatch(r"[A-Z]{1,20}", v):
            raise ValueError("an HTTP method in capitals, such as GET, HEAD or OPTIONS")
        return v

    @field_validator("path")
    @classmethod
    def _path(cls, v: str, info: ValidationInfo) -> str:
        _require_http(cls, info, v)
        if not v.startswith("/") or any(c.isspace() for c in v):
            raise ValueError('a path starting with "/" and without spaces, such as "/healthz"')
        return v

    @field_validator("host")
    @classmethod
    def _host(cls, v: str | None, info: ValidationInfo) -> str | None:
        _require_http(cls, info, v)
        if v is not None and (not v or any(c.isspace() for c in v)):
            raise ValueError('a Host header value without spaces, such as "app.example.com"')
        return v

    @field_validator("expect_status")
    @classmethod
    def _expect_status(cls, v: str, info: ValidationInfo) -> str:
        _require_http(cls, info, v)
        parse_status_ranges(v)  # raises ValueError naming the bad part and the valid forms
        return v

    @field_validator("expect_body")
    @classmethod
    def _expect_body(cls, v: str | None, info: ValidationInfo) -> str | None:
        _require_http(cls, info, v)
        if v is not None and not v:
            raise ValueError("an empty substring matches every body; remove expect_body")
        if v is not None and info.data.get("method") == "HEAD":
            raise ValueError('a HEAD response has no body; use method = "GET" or remove it')
        return v


class PassiveConfig(_Model):
    """``[pools.NAME.passive]``: eject backends that fail real traffic (outlier detection)."""

    consecutive_failures: int = Field(default=5, ge=1, le=10000)
    ejection_time: Duration = Field(default=30.0, gt=0)
    max_ejection_time: Duration = Field(default=300.0, gt=0)  # default: max(300s, ejection_time)
    max_ejection_percent: int = Field(default=50, ge=0, le=100)
    on_5xx: bool = False

    @model_validator(mode="before")
    @classmethod
    def _derived_defaults(cls, data: Any) -> Any:
        if isinstance(data, dict) and "ejection_time" in data:
            try:
                base = parse_duration(data["ejection_time"])
            except ValueError:
                return data  # the ejection_time field reports it
            data = {"max_ejection_time": max(300.0, base), **data}
        return data

    @field_validator("max_ejection_time")
    @classmethod
    def _cap(cls, v: float, info: ValidationInfo) -> float:
        base = info.data.get("ejection_time")
        if base is not None and v < base:
            raise ValueError(
                f"must be at least ejection_time ({base:g}s): ejections double from "
                "ejection_time up to this cap; raise it or lower ejection_time"
            )
        return v


class PeakEwmaConfig(_Model):
    """``[pools.NAME.peak_ewma]``: the latency estimates of ``strategy = "peak_ewma"``
    (lb/balancing/peak_ewma.py; docs/config.md, "Latency-aware balancing")."""

    decay: Duration = Field(
        default=10.0, gt=0, le=3600, description="how fast an estimate forgets (Finagle's 10s)"
    )
    floor: Duration = Field(
        default=0.001,
        le=60,
        description="the lowest an estimate reads: an unused slow backend decays to it and is "
        "tried again",
    )
    initial_rtt: Duration = Field(
        default=0.001, le=60, description="the estimate of a backend with no answer yet, idle"
    )
    penalty: Duration = Field(
        default=1.0,
        le=3600,
        description="the estimate of a backend with no answer yet and a request in flight",
    )
    choices: int = Field(
        default=2,
        ge=2,
        le=100,
        description="distinct backends a pick compares (2: power of two choices; Envoy's "
        "choice_count)",
    )


class PoolConfig(_Model):
    strategy: str = "round_robin"
    hash_key: str = "source_ip"
    bounded_load: float | None = Field(default=None, gt=1.0)
    vnodes: int = Field(default=160, ge=1, le=10000)
    peak_ewma: PeakEwmaConfig | None = Field(
        default=None, description='the estimates of strategy = "peak_ewma" (defaults if unset)'
    )
    slow_start: Duration = 0.0
    health: HealthConfig | None = None
    passive: PassiveConfig | None = None
    panic: Literal["503", "route_all"] = Field(
        default="503", description="what to do when no backend is eligible"
    )
    retries: int = Field(default=2, ge=0, le=10)
    # Overload protection (docs/config.md, "Limits and the queue").
    max_conn: int = Field(
        default=0,
        ge=0,
        le=1_000_000,
        description="each backend's concurrent requests (http) or connections (tcp); 0: no limit",
    )
    max_queue: int = Field(
        default=1000, ge=0, le=1_000_000, description="requests waiting for a slot, per worker"
    )
    queue_timeout: Duration = Field(
        default=5.0,
        le=3600,
        description="the longest a request waits for a backend below its max_conn",
    )
    hold_timeout: Duration = Field(
        default=0.0,
        le=3600,
        description="with no eligible backend, the longest a request is held (0: 503 at once)",
    )
    retry_budget: float = Field(
        default=0.2,
        ge=0.0,
        le=10.0,
        description="retries allowed, as a share of first tries (10: as many as retries allow)",
    )
    retry_budget_min: int = Field(
        default=10, ge=0, le=10000, description="retries per second always allowed"
    )
    drain_timeout: Duration = Field(
        default=30.0, description="a draining backend's connections are closed after this long"
    )
    sticky_cookie: str | None = Field(
        default=None, description="http: insert a cookie naming the backend and honour it"
    )
    upstream_max_idle: int = Field(
        default=1024, ge=0, description="http: idle keep-alive connections kept per backend"
    )
    upstream_idle_timeout: Duration = Field(
        default=30.0, description="http: an idle pooled upstream connection is closed after this"
    )
    upstream_max_requests: int = Field(
        default=10000, ge=1, description="http: requests per upstream connection before reuse stops"
    )
    backends: list[BackendConfig] = Field(default_factory=list)
    # -- TLS and PROXY protocol to the backends (docs/config.md, "TLS") ----------------------
    tls: bool = Field(default=False, description="TLS to the backends (and their health checks)")
    tls_verify: bool = Field(
        default=True, description="verify the backends' certificates (off only explicitly)"
    )
    tls_ca: str | None = Field(
        default=None, description="PEM CA bundle for verification (none: the system's)"
    )
    tls_server_name: str | None = Field(
        default=None, description="SNI and the name verified (none: the backend's host)"
    )
    tls_cert: str | None = Field(default=None, description="client certificate for the backends")
    tls_key: str | None = None
    send_proxy: Literal["v1", "v2"] | None = Field(
        default=None, description="write a PROXY header with the client's address first"
    )

    @model_validator(mode="before")
    @classmethod
    def _private_upstreams(cls, data: Any) -> Any:
        # A connection that carries a PROXY header speaks for one client: it is never pooled.
        if isinstance(data, dict) and data.get("send_proxy") is not None:
            if data.get("upstream_max_idle", 0) != 0:
                raise ConfigFieldError(
                    "upstream_max_idle",
                    data["upstream_max_idle"],
                    "a connection that carries a PROXY header belongs to one client and is "
                    "never pooled (send_proxy is set): remove upstream_max_idle",
                    relative=True,
                )
            data = {**data, "upstream_max_idle": 0}
        return data

    @model_validator(mode="after")
    def _tls_fields(self) -> PoolConfig:
        if not self.tls:
            for name in ("tls_ca", "tls_server_name", "tls_cert", "tls_key"):
                if getattr(self, name) is not None:
                    raise ConfigFieldError(
                        name, getattr(self, name), "needs tls = true", relative=True
                    )
        if (self.tls_cert is None) != (self.tls_key is None):
            missing = "tls_key" if self.tls_key is None else "tls_cert"
            raise ConfigFieldError(
                missing, None, "a client certificate needs both tls_cert and tls_key", relative=True
            )
        return self

    @model_validator(mode="after")
    def _peak_ewma_only(self) -> PoolConfig:
        if self.peak_ewma is not None and self.strategy != "peak_ewma":
            raise ConfigFieldError(
                "peak_ewma",
                self.peak_ewma.model_dump(),
                f'only strategy = "peak_ewma" uses it (this pool\'s is {self.strategy!r}); '
                "remove the table or change the strategy",
                relative=True,
            )
        return self

    @field_validator("panic", mode="before")
    @classmethod
    def _panic(cls, v: object) -> object:
        return "503" if v == 503 and not isinstance(v, bool) else v

    @field_validator("hash_key")
    @classmethod
    def _hash_key(cls, v: str) -> str:
        if v in ("source_ip", "path"):
            return v
        kind, sep, name = v.partition(":")
        if sep and kind in ("header", "cookie") and name:
            return v
        raise ValueError('hash_key must be "source_ip", "path", "header:NAME" or "cookie:NAME"')

    @field_validator("strategy")
    @classmethod
    def _strategy(cls, v: str) -> str:
        from lb.balancing import resolve_strategy

        resolve_strategy(v)  # raises UnknownStrategy (a ValueError) with the valid names
        return v

    @model_validator(mode="after")
    def _unique_backends(self) -> PoolConfig:
        seen: dict[str, int] = {}
        for i, b in enumerate(self.backends):
            key = b.id or b.address
            if key in seen:
                # Name the backend, not the pool: the error's location is the pool, and
                # its value would be the whole pool as a dict.
                first = f"backends[{seen[key]}]"
                why = (
                    f"listed twice: {first} has the same id; give each backend of a pool its own id"
                    if b.id
                    else f"listed twice: {first} has the same id (an id defaults to the "
                    "address); remove one, or give one of them its own id"
                )
                field = "id" if b.id else "address"
                raise ConfigFieldError(f"backends[{i}].{field}", key, why, relative=True)
            seen[key] = i
        return self


class AdminConfig(_Model):
    """The optional TCP admin listener: read-only API, /metrics and the dashboard."""

    bind: str | None = Field(default=None, description='e.g. "127.0.0.1:9900"; off when unset')
    token_file: str | None = Field(
        default=None, description="bearer token for write calls; without it writes are refused"
    )

    @field_validator("bind")
    @classmethod
    def _bind(cls, v: str | None) -> str | None:
        return None if v is None else _check_address(v)


CONFIG_CHECKS = "lb.config_checks"
"""The entry-point group through which a package checks a section of ``config.toml`` that lb
keeps but does not use: each entry point is named after its section and is a ``SectionCheck``.
lb-scaler registers ``scalers`` (pyproject.toml). lb finds the check by name when the section is
there, so lb's code never imports the package that owns the section: the arrow points from that
package to lb, and an lb without it (or a file without the section) imports nothing more."""

SectionCheck = Callable[[Any, Mapping[str, Any]], None]
"""``check(section, validated)``: raise ValueError (or ``ConfigFieldError``, or a pydantic
ValidationError located inside the section) for a bad ``section``. ``validated`` holds the
fields of ``Config`` validated before it, by name (``pools``, when it was valid)."""


@functools.cache
def section_checks(section: str) -> tuple[SectionCheck, ...]:
    """The checks installed packages register for ``section`` (loaded once per process)."""
    checks: list[SectionCheck] = []
    for ep in sorted(entry_points(group=CONFIG_CHECKS, name=section), key=lambda e: e.value):
        try:
            checks.append(cast(SectionCheck, ep.load()))
        except Exception as exc:
            raise ValueError(
                f"cannot load {ep.value}, the check registered for this section in "
                f"{CONFIG_CHECKS} ({type(exc).__name__}: {exc}); reinstall the package that "
                "registers it, or remove the section"
            ) from exc
    return tuple(checks)


class Config(_Model):
    lb: LBSection = Field(default_factory=LBSection)
    admin: AdminConfig = Field(default_factory=AdminConfig)
    listeners: list[ListenerConfig] = Field(min_length=1)
    pools: dict[str, PoolConfig] = Field(min_length=1)
    scalers: list[dict[str, Any]] = Field(
        default_factory=list,
        description="[[scalers]]: lb-scaler's entries, checked by its lb.config_checks entry point",
    )

    @model_validator(mode="before")
    @classmethod
    def _hold_for_scale_from_zero(cls, data: Any) -> Any:
        """A pool that a scaler may take to zero members holds requests by default
        (``HOLD_FOR_SCALER``), so that the first request after a scale-down to zero waits for
        the member it starts instead of getting a 503. An explicit ``hold_timeout`` wins."""
        if not isinstance(data, dict):
            return data
        pools, scalers = data.get("pools"), data.get("scalers")
        if not isinstance(pools, dict) or not isinstance(scalers, list):
            return data
        zero = {s.get("pool") for s in scalers if isinstance(s, dict) and s.get("min", 1) == 0}
        if not any(isinstance(pools.get(n), dict) for n in zero if isinstance(n, str)):
            return data
        pools = dict(pools)
        for name in zero:
            if isinstance(name, str) and isinstance(pools.get(name), dict):
                pools[name] = {"hold_timeout": HOLD_FOR_SCALER, **pools[name]}
        return {**data, "pools": pools}

    @field_validator("scalers")
    @classmethod
    def _scalers(cls, v: list[dict[str, Any]], info: ValidationInfo) -> list[dict[str, Any]]:
        # lb ignores this section, but runs the check lb-scaler registers for it, so that
        # `lb check` and a reload refuse the same mistakes as `lb-scaler`.
        for check in section_checks("scalers"):
            check(v, info.data)
        return v

    @model_validator(mode="after")
    def _references(self) -> Config:
        names: set[str] = set()
        binds: set[str] = set()
        pools = ", ".join(sorted(self.pools))
        for i, listener in enumerate(self.listeners):
            if listener.pool is None and listener.mode == "tcp":
                raise ConfigFieldError(
                    f"listeners[{i}].pool", None, f"a tcp listener needs a pool; pools: {pools}"
                )
            if listener.pool is not None and listener.pool not in self.pools:
                raise ConfigFieldError(
                    f"listeners[{i}].pool", listener.pool, f"no such pool; defined pools: {pools}"
                )
            if listener.mode == "tcp" and listener.routes:
                raise ConfigFieldError(
                    f"listeners[{i}].routes", "...", 'routes need mode = "http"; remove them'
                )
            for j, route in enumerate(listener.routes):
                if route.pool not in self.pools:
                    raise ConfigFieldError(
                        f"listeners[{i}].routes[{j}].pool",
                        route.pool,
                        f"no such pool; defined pools: {pools}",
                    )
            if listener.mode == "tcp" and listener.pool is not None:
                hk = self.pools[listener.pool].hash_key
                if self.pools[listener.pool].strategy == "consistent_hash" and hk != "source_ip":
                    raise ConfigFieldError(
                        f"pools.{listener.pool}.hash_key",
                        hk,
                        'a tcp listener can only hash on "source_ip"',
                    )
            if listener.name in names:
                raise ConfigFieldError(
                    f"listeners[{i}].name", listener.name, "names must be unique"
                )
            host, port = parse_address(listener.bind)
            for other in binds:
                other_host, other_port = parse_address(other)
                if port == other_port and _hosts_overlap(host, other_host):
                    same = host == other_host
                    raise ConfigFieldError(
                        f"listeners[{i}].bind",
                        listener.bind,
                        "two listeners bind the same address"
                        if same
                        else f"overlaps {other} (a wildcard address takes the port on every "
                        "address of its family); use another port or specific addresses",
                    )
            names.add(listener.name)
            binds.add(listener.bind)
        return self


def _hosts_overlap(a: str, b: str) -> bool:
    """Whether two listeners' hosts (on one port) would take the same connections: the same
    host, or a wildcard (``0.0.0.0`` for IPv4; ``::``, dual-stack on Linux, for both)."""
    if a == b or "::" in (a, b) or "" in (a, b):
        return True
    v4 = "0.0.0.0"
    return (a == v4 and ":" not in b) or (b == v4 and ":" not in a)


class ConfigFieldError(ValueError):
    """A cross-field error that knows its field path (raised inside model validators).
    ``relative``: ``path`` starts at the model that raised it (``backends[1].address`` in a
    pool), and the error's location is put in front of it (``pools.web.``)."""

    def __init__(self, path: str, value: object, message: str, *, relative: bool = False) -> None:
        super().__init__(message)
        self.path = path
        self.value = value
        self.message = message
        self.relative = relative


class ConfigError(Exception):
    """The file could not be used. ``str()`` is the operator-facing message."""


def loc_to_path(loc: tuple[int | str, ...]) -> str:
    """A pydantic error location as a field path: ``pools.web.backends[1].weight``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _join_path(base: str, rest: str) -> str:
    if not base:
        return rest
    return base + rest if rest.startswith("[") else f"{base}.{rest}"


def _format_validation_error(path: Path, exc: ValidationError) -> str:
    lines = [f"{path}: invalid configuration ({exc.error_count()} problem(s))"]
    for err in exc.errors():
        ctx_err = (err.get("ctx") or {}).get("error")
        if isinstance(ctx_err, ConfigFieldError):
            where = ctx_err.path
            if ctx_err.relative:
                where = _join_path(loc_to_path(tuple(err["loc"])), where)
            lines.append(f"  {where}: {ctx_err.value!r} is invalid: {ctx_err.message}")
            continue
        field = loc_to_path(tuple(err["loc"])) or "(top level)"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            lines.append(f"  {field}: unknown field; remove it or check its spelling")
        elif err["type"] == "missing":
            lines.append(f"  {field}: required field is missing; add it")
        else:
            lines.append(f"  {field}: {err['input']!r} is invalid: {msg}")
    return "\n".join(lines)


def parse_config(data: dict[str, Any], path: Path | str = "<config>") -> Config:
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(Path(path), exc)) from None


def load_config(path: str | os.PathLike[str]) -> Config:
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read the config file: {exc.strerror}") from None
    try:
        data = tomllib.loads(raw.decode())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{p}: not valid TOML: {exc}") from None
    config = parse_config(data, p)
    # Files named in the config are relative to the config file, wherever lb was started from.
    base = p.resolve().parent
    listeners = [
        lc.model_copy(update={"access_log": str(base / lc.access_log)})
        if lc.access_log and not Path(lc.access_log).is_absolute()
        else lc
        for lc in config.listeners
    ]
    config = resolve_tls_paths(config.model_copy(update={"listeners": listeners}), base)
    check_tls_files(config, p)
    return config


def _resolve(base: Path, path: str | None) -> str | None:
    return None if path is None or Path(path).is_absolute() else str(base / path)


def resolve_tls_paths(config: Config, base: Path) -> Config:
    """Certificate, key and CA paths relative to the config file (``base``) made absolute."""
    listeners = []
    for lc in config.listeners:
        t = lc.tls
        if t is not None:
            certs = [
                CertificateConfig(
                    cert=_resolve(base, c.cert) or c.cert, key=_resolve(base, c.key) or c.key
                )
                for c in t.certificates
            ]
            t = t.model_copy(
                update={
                    "certificates": certs,
                    "client_ca": _resolve(base, t.client_ca) or t.client_ca,
                }
            )
            lc = lc.model_copy(update={"tls": t})
        listeners.append(lc)
    pools = {
        name: pc.model_copy(
            update={
                f: _resolve(base, getattr(pc, f)) or getattr(pc, f)
                for f in ("tls_ca", "tls_cert", "tls_key")
            }
        )
        for name, pc in config.pools.items()
    }
    return config.model_copy(update={"listeners": listeners, "pools": pools})


def check_tls_files(config: Config, path: Path) -> None:
    """Read every certificate, key and CA bundle the config names as a worker will; a bad one
    refuses the whole file (before anything binds, and at a reload before anything changes)."""
    problems: list[str] = []

    def check(field: str, fn: Callable[[], object]) -> None:
        try:
            fn()
        except tls.TlsFileError as exc:
            problems.append(f"  {field}: {exc.path}: {exc.reason}; fix the file or the path")

    for i, lc in enumerate(config.listeners):
        if lc.tls is None:
            continue
        for j, c in enumerate(lc.tls.certificates):
            check(
                f"listeners[{i}].tls.certificates[{j}]",
                functools.partial(tls.check_certificate, c.cert, c.key),
            )
        if lc.tls.client_ca is not None:
            check(
                f"listeners[{i}].tls.client_ca",
                functools.partial(tls.check_ca_bundle, lc.tls.client_ca),
            )
    for name, pc in config.pools.items():
        if pc.tls_ca is not None:
            check(f"pools.{name}.tls_ca", functools.partial(tls.check_ca_bundle, pc.tls_ca))
        if pc.tls_cert is not None and pc.tls_key is not None:
            check(
                f"pools.{name}.tls_cert",
                functools.partial(tls.check_certificate, pc.tls_cert, pc.tls_key),
            )
    if problems:
        raise ConfigError(
            f"{path}: unusable TLS file(s) ({len(problems)} problem(s))\n" + "\n".join(problems)
        )

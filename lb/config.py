"""Load and validate ``config.toml`` into typed models.

This module owns the configuration schema and its error messages. A bad file is refused with a
message that names the file, the field path (``pools.web.backends[1].weight``), the bad value
and what would be valid, before anything binds or starts. It never opens sockets.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from lb.model import parse_address

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(us|ms|s|m|h)\s*$")
_UNIT = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(value: object) -> float:
    """``"150ms"`` -> 0.15. Plain numbers are seconds."""
    if isinstance(value, bool):
        raise ValueError('a duration such as "2s", "150ms" or "1m"')
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("a duration must not be negative")
        return float(value)
    if isinstance(value, str):
        m = _DURATION.match(value)
        if m:
            return float(m.group(1)) * _UNIT[m.group(2)]
    raise ValueError('a duration such as "2s", "150ms" or "1m" (units: us, ms, s, m, h)')


Duration = Annotated[float, BeforeValidator(parse_duration)]


def _check_address(value: str) -> str:
    parse_address(value)
    return value


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LBSection(_Model):
    workers: int | Literal["auto"] = Field(
        default=1, description='0 runs one process; N worker processes; "auto" one per core'
    )
    control_socket: str = "run/lb.sock"
    state_file: str = "run/state.json"
    log_format: Literal["text", "json"] = "text"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    grace: Duration = Field(default=10.0, description="how long SIGTERM waits for open connections")

    @field_validator("workers")
    @classmethod
    def _workers(cls, v: int | str) -> int | str:
        if isinstance(v, int) and not 0 <= v <= 256:
            raise ValueError('workers must be 0 (single process), 1-256, or "auto"')
        return v

    @property
    def worker_count(self) -> int:
        if self.workers == "auto":
            return os.cpu_count() or 1
        return int(self.workers)


class ListenerConfig(_Model):
    name: str = Field(min_length=1)
    bind: str
    mode: Literal["tcp"] = "tcp"
    pool: str
    connect_timeout: Duration = 2.0
    idle_timeout: Duration = 60.0
    max_connections: int = Field(default=10000, ge=1)
    backlog: int = Field(default=1024, ge=1)

    @field_validator("bind")
    @classmethod
    def _bind(cls, v: str) -> str:
        return _check_address(v)


class BackendConfig(_Model):
    address: str
    weight: int = Field(default=1, ge=0, le=1000)
    id: str | None = None

    @field_validator("address")
    @classmethod
    def _address(cls, v: str) -> str:
        return _check_address(v)


class PoolConfig(_Model):
    strategy: str = "round_robin"
    hash_key: str = "source_ip"
    bounded_load: float | None = Field(default=None, gt=1.0)
    vnodes: int = Field(default=160, ge=1, le=10000)
    slow_start: Duration = 0.0
    retries: int = Field(default=2, ge=0, le=10)
    backends: list[BackendConfig] = Field(default_factory=list)

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
        seen: set[str] = set()
        for i, b in enumerate(self.backends):
            key = b.id or b.address
            if key in seen:
                raise ValueError(f"backends[{i}] {key!r} is listed twice; give each one id once")
            seen.add(key)
        return self


class Config(_Model):
    lb: LBSection = Field(default_factory=LBSection)
    listeners: list[ListenerConfig] = Field(min_length=1)
    pools: dict[str, PoolConfig] = Field(min_length=1)

    @model_validator(mode="after")
    def _references(self) -> Config:
        names: set[str] = set()
        binds: set[str] = set()
        for i, listener in enumerate(self.listeners):
            if listener.pool not in self.pools:
                raise ConfigFieldError(
                    f"listeners[{i}].pool",
                    listener.pool,
                    f"no such pool; defined pools: {', '.join(sorted(self.pools))}",
                )
            if listener.mode == "tcp":
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
            if listener.bind in binds:
                raise ConfigFieldError(
                    f"listeners[{i}].bind", listener.bind, "two listeners bind the same address"
                )
            names.add(listener.name)
            binds.add(listener.bind)
        return self


class ConfigFieldError(ValueError):
    """A cross-field error that knows its field path (raised inside model validators)."""

    def __init__(self, path: str, value: object, message: str) -> None:
        super().__init__(message)
        self.path = path
        self.value = value
        self.message = message


class ConfigError(Exception):
    """The file could not be used. ``str()`` is the operator-facing message."""


def _loc_to_path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _format_validation_error(path: Path, exc: ValidationError) -> str:
    lines = [f"{path}: invalid configuration ({exc.error_count()} problem(s))"]
    for err in exc.errors():
        ctx_err = (err.get("ctx") or {}).get("error")
        if isinstance(ctx_err, ConfigFieldError):
            lines.append(f"  {ctx_err.path}: {ctx_err.value!r} is invalid: {ctx_err.message}")
            continue
        field = _loc_to_path(tuple(err["loc"])) or "(top level)"
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
    return parse_config(data, p)

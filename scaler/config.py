"""``[[scalers]]``: the scaler's section of ``config.toml``, one entry per pool.

This module owns the schema of that section and its error messages. ``lb``'s own ``Config``
keeps the entries as plain tables and calls ``check_scalers`` on them, found through the
``lb.config_checks`` entry point (lb never imports scaler), so ``lb check`` and
``lb-scaler check`` refuse the same mistakes with the same messages (``scalers[0].max: ...``),
and an ``lb`` that never runs a scaler still accepts a file that has one. It never opens
sockets or starts anything.

Step limits follow the HPA's ``behavior`` policies: when neither ``max_add`` nor
``max_add_percent`` is given, scale-up may add 4 members or double the count per ``period``
(whichever is more); when only one of them is given, only that one applies. Scale-down is
unlimited (``max_remove_percent = 100``) unless ``max_remove`` or ``max_remove_percent`` is
given.
"""

from __future__ import annotations

import re
import shlex
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails

from lb.config import Config, ConfigFieldError, Duration, parse_duration

Metric = Literal["inflight_per_backend", "rps_per_backend", "p95_latency_ms", "cpu_percent"]
METRICS: tuple[str, ...] = (
    "inflight_per_backend",
    "rps_per_backend",
    "p95_latency_ms",
    "cpu_percent",
)

PROCESS_PLACEHOLDERS = frozenset({"port", "host", "pool", "python"})
DOCKER_PLACEHOLDERS = frozenset({"port", "host", "pool"})
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_MEMORY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmg]?)i?b?\s*$", re.IGNORECASE)
_MEMORY_UNIT = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}

# Defaults of the step limits when a direction has none set (the HPA's defaults).
DEFAULT_MAX_ADD = 4
DEFAULT_MAX_ADD_PERCENT = 100.0
DEFAULT_MAX_REMOVE_PERCENT = 100.0


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def field_error(
    model: str, loc: tuple[str | int, ...], value: object, message: str
) -> ValidationError:
    """A cross-field problem reported at the field it concerns (not at the whole table):
    pydantic nests a ValidationError raised by a validator under the caller's location."""
    detail = InitErrorDetails(
        type="value_error", loc=loc, input=value, ctx={"error": ValueError(message)}
    )
    return ValidationError.from_exception_data(model, [detail])


def parse_port_range(value: object) -> tuple[int, int]:
    """``"9100-9199"`` -> (9100, 9199); a single port is a range of one."""
    if isinstance(value, str):
        lo_s, sep, hi_s = value.partition("-")
        lo_s, hi_s = lo_s.strip(), (hi_s.strip() if sep else lo_s.strip())
        if lo_s.isdigit() and hi_s.isdigit():
            lo, hi = int(lo_s), int(hi_s)
            if 1 <= lo <= hi <= 65535:
                return lo, hi
    raise ValueError('a port range such as "9100-9199" (first <= last, 1-65535)')


def _port_range(value: object) -> str:
    parse_port_range(value)
    assert isinstance(value, str)
    return value


PortRange = Annotated[str, BeforeValidator(_port_range)]


def parse_memory(value: object) -> int:
    """``"128m"`` -> bytes. Plain integers are bytes."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    if isinstance(value, str):
        m = _MEMORY.match(value)
        if m:
            n = int(float(m.group(1)) * _MEMORY_UNIT[m.group(2).lower()])
            if n >= 4 * 1024 * 1024:
                return n
            raise ValueError("Docker needs at least 4m of memory")
    raise ValueError('a size such as "128m", "1g" or a number of bytes')


def placeholders(template: str | list[str]) -> set[str]:
    parts = [template] if isinstance(template, str) else template
    return {name for part in parts for name in _PLACEHOLDER.findall(part)}


def _check_template(value: str | list[str], allowed: frozenset[str]) -> None:
    # No {port} is allowed: members also get it as $PORT (a shell command may use that).
    unknown = placeholders(value) - allowed
    if unknown:
        names = ", ".join("{" + n + "}" for n in sorted(allowed))
        bad = ", ".join("{" + n + "}" for n in sorted(unknown))
        raise ValueError(f"unknown placeholder {bad}; the placeholders are {names}")


class ProcessSettings(_Model):
    """``[scalers.process]``: local processes, one per member (the embedded default)."""

    command: str = Field(
        description="command template; {port} is the member's port, {python} this Python"
    )
    port_range: PortRange = Field(default="9100-9199", description="ports handed to members")
    host: str = Field(default="127.0.0.1", description="address members listen on")
    env: dict[str, str] = Field(default_factory=dict, description="added to the environment")
    cwd: str | None = Field(default=None, description="working folder; default: the config's")
    state_file: str | None = Field(
        default=None, description="members file; default: scaler-POOL.json beside lb's state_file"
    )
    log_dir: str | None = Field(
        default=None, description="members' output; default: members/ beside lb's state_file"
    )

    @field_validator("command")
    @classmethod
    def _command(cls, v: str) -> str:
        try:
            argv = shlex.split(v)
        except ValueError as exc:
            raise ValueError(f"cannot split the command like a shell would: {exc}") from None
        if not argv:
            raise ValueError('an empty command; e.g. "{python} -m lb.demo_server --port {port}"')
        _check_template(v, PROCESS_PLACEHOLDERS)
        exe = argv[0].replace("{python}", sys.executable)
        if "{" not in exe and "/" not in exe and shutil.which(exe) is None:
            raise ValueError(f"{exe!r} is not on PATH; give its full path or install it")
        return v

    @field_validator("host")
    @classmethod
    def _host(cls, v: str) -> str:
        if not v or any(c.isspace() or c in "/:[]" for c in v):
            raise ValueError('an IPv4 address or host name, such as "127.0.0.1"')
        return v


class DockerSettings(_Model):
    """``[scalers.docker]``: one container per member, through aiodocker."""

    image: str = Field(min_length=1, description="a local image; nothing is pulled")
    command: str | list[str] | None = Field(
        default=None, description="command template ({port}); default: the image's CMD"
    )
    env: dict[str, str] = Field(default_factory=dict)
    labels: dict[str, str] = Field(
        default_factory=dict, description="added to lb.managed-by=scaler and lb.pool=NAME"
    )
    cpus: float | None = Field(default=None, gt=0, le=1024, description="CPU limit, in cores")
    memory: int | None = Field(default=None, description='memory limit: "128m", "1g" or bytes')
    network_mode: Literal["host", "bridge"] = "host"
    port_range: PortRange = Field(default="9200-9299", description="host mode: member ports")
    container_port: int | None = Field(
        default=None, ge=1, le=65535, description="bridge mode: the port inside the container"
    )
    host: str = Field(default="127.0.0.1", description="host mode: bind address; bridge: HostIp")
    docker_url: str | None = Field(
        default=None, description="engine address; default: DOCKER_HOST, then the usual socket"
    )
    init: bool = Field(
        default=True, description="run an init as PID 1, so SIGTERM reaches the member"
    )
    stats_timeout: Duration = Field(default=3.0, gt=0, description="per Docker stats call")

    @field_validator("memory", mode="before")
    @classmethod
    def _memory(cls, v: object) -> object:
        return None if v is None else parse_memory(v)

    @field_validator("image")
    @classmethod
    def _image(cls, v: str) -> str:
        if any(c.isspace() for c in v):
            raise ValueError('an image reference without spaces, such as "lbtest/busybox:1"')
        return v

    @field_validator("command")
    @classmethod
    def _command(cls, v: str | list[str] | None) -> str | list[str] | None:
        if v is None:
            return v
        if isinstance(v, str):
            try:
                if not shlex.split(v):
                    raise ValueError("an empty command; remove it to use the image's CMD")
            except ValueError as exc:
                raise ValueError(str(exc)) from None
        elif not v:
            raise ValueError("an empty command; remove it to use the image's CMD")
        _check_template(v, DOCKER_PLACEHOLDERS)
        return v

    @field_validator("labels")
    @classmethod
    def _labels(cls, v: dict[str, str]) -> dict[str, str]:
        for key in v:
            if key.startswith("lb."):
                raise ValueError(
                    f"label {key!r}: labels starting with lb. are the scaler's own "
                    "(lb.managed-by, lb.pool, lb.port); choose another name"
                )
        return v

    @field_validator("container_port")
    @classmethod
    def _container_port(cls, v: int | None, info: ValidationInfo) -> int | None:
        mode = info.data.get("network_mode")
        if v is not None and mode == "host":
            raise ValueError(
                'only applies to network_mode = "bridge"; with host networking members '
                "listen on ports from port_range"
            )
        return v

    @model_validator(mode="after")
    def _bridge(self) -> DockerSettings:
        if self.network_mode == "bridge" and self.container_port is None:
            raise field_error(
                "docker",
                ("container_port",),
                None,
                'network_mode = "bridge" needs container_port (the port the member listens '
                "on inside the container); Docker picks the host port",
            )
        return self


# -- the lb instances an entry keeps in step (docs/scaler.md, "Several lb instances") -------------

LOCAL_LB = "local"  # the name of the lb behind [lb] control_socket


class LbInstance(_Model):
    """One entry of ``lbs``: another lb, through its admin listener (``[admin] bind`` there)
    and that lb's bearer token for write calls."""

    url: str = Field(description='the admin listener, e.g. "http://127.0.0.1:9901"')
    name: str | None = Field(
        default=None, description="in status, logs and metrics; default: host:port of url"
    )
    token_file: str | None = Field(
        default=None, description="file holding that lb's [admin] token (relative to config)"
    )
    token_env: str | None = Field(
        default=None, description="or: an environment variable holding it"
    )

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        from yarl import URL

        try:
            u = URL(v)
            port = u.explicit_port
        except (ValueError, TypeError):
            port = None
            u = None
        if (
            u is None
            or u.scheme not in ("http", "https")
            or not u.host
            or port is None
            or u.path not in ("", "/")
            or u.query_string
            or u.user
        ):
            raise ValueError(
                'the admin listener of an lb, as "http://HOST:PORT" (no path, no credentials: '
                "the token goes in token_file or token_env)"
            )
        return v.rstrip("/")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}", v):
            raise ValueError(
                "letters, digits, '.', '_', ':' and '-', at most 64 characters, such as 'edge-2'"
            )
        if v == LOCAL_LB:
            raise ValueError(f"{LOCAL_LB!r} names the lb of [lb] control_socket; choose another")
        return v

    @field_validator("token_env")
    @classmethod
    def _token_env(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", v):
            raise ValueError("the name of an environment variable, such as LB_EDGE2_TOKEN")
        return v

    @model_validator(mode="after")
    def _token(self) -> LbInstance:
        if (self.token_file is None) == (self.token_env is None):
            raise field_error(
                "lbs",
                ("token_file",),
                self.token_file,
                "give exactly one of token_file and token_env: the bearer token of that lb's "
                "admin listener (its [admin] token_file), which the scaler's writes need",
            )
        return self

    @property
    def label(self) -> str:
        if self.name is not None:
            return self.name
        from yarl import URL

        u = URL(self.url)
        return f"{u.host}:{u.explicit_port}"


def _check_lbs(local_lb: bool, lbs: list[LbInstance]) -> None:
    """The instances of one entry: at least one, names and addresses each used once."""
    if not local_lb and not lbs:
        raise field_error(
            "scalers",
            ("local_lb",),
            local_lb,
            "local_lb = false and no lbs: no lb to keep in step; set local_lb = true or add "
            'lbs = [{ url = "http://HOST:PORT", token_file = "..." }]',
        )
    names: dict[str, int] = {}
    urls: dict[str, int] = {}
    for i, lb in enumerate(lbs):
        if lb.url in urls:
            raise field_error(
                "scalers", ("lbs", i, "url"), lb.url, f"lbs[{urls[lb.url]}] has this url"
            )
        urls[lb.url] = i
        if lb.label in names:
            raise field_error(
                "scalers",
                ("lbs", i, "name"),
                lb.label,
                f"lbs[{names[lb.label]}] is named {lb.label!r} too; give each a distinct name",
            )
        names[lb.label] = i


class SwarmSettings(_Model):
    """``[scalers.swarm]``: one single-replica Swarm service per member, through aiodocker.

    The engine must be a Swarm manager (``docker swarm init``). Members run with host
    networking on a port of ``port_range``, like ``[scalers.docker]`` in host mode."""

    image: str = Field(min_length=1, description="an image every node has; nothing is pulled")
    command: str | list[str] | None = Field(
        default=None, description="command template ({port}); default: the image's CMD"
    )
    env: dict[str, str] = Field(default_factory=dict)
    labels: dict[str, str] = Field(
        default_factory=dict, description="added to lb.managed-by=scaler and lb.pool=NAME"
    )
    cpus: float | None = Field(default=None, gt=0, le=1024, description="CPU limit, in cores")
    memory: int | None = Field(default=None, description='memory limit: "128m", "1g" or bytes')
    port_range: PortRange = Field(default="9300-9399", description="member ports (host network)")
    host: str = Field(default="127.0.0.1", description="address members bind and lb sends to")
    constraints: list[str] = Field(
        default_factory=list, description='placement constraints, e.g. "node.role==worker"'
    )
    docker_url: str | None = Field(
        default=None, description="a manager's address; default: DOCKER_HOST, then the socket"
    )
    init: bool = Field(
        default=True, description="run an init as PID 1, so SIGTERM reaches the member"
    )
    stats_timeout: Duration = Field(default=3.0, gt=0, description="per Docker stats call")

    # The fields it shares with [scalers.docker] are checked by the same rules.
    @field_validator("memory", mode="before")
    @classmethod
    def _memory(cls, v: object) -> object:
        return DockerSettings._memory(v)

    @field_validator("image")
    @classmethod
    def _image(cls, v: str) -> str:
        return DockerSettings._image(v)

    @field_validator("command")
    @classmethod
    def _command(cls, v: str | list[str] | None) -> str | list[str] | None:
        return DockerSettings._command(v)

    @field_validator("labels")
    @classmethod
    def _labels(cls, v: dict[str, str]) -> dict[str, str]:
        return DockerSettings._labels(v)

    @field_validator("host")
    @classmethod
    def _host(cls, v: str) -> str:
        if not v or any(c.isspace() or c in "/:[]" for c in v):
            raise ValueError('an IPv4 address or host name, such as "127.0.0.1"')
        return v

    @field_validator("constraints")
    @classmethod
    def _constraints(cls, v: list[str]) -> list[str]:
        for c in v:
            if "==" not in c and "!=" not in c:
                raise ValueError(
                    f"constraint {c!r}: a Swarm placement constraint is KEY==VALUE or "
                    'KEY!=VALUE, such as "node.role==worker"'
                )
        return v


def _step_defaults(data: Any) -> Any:
    """A direction with no step limit set gets the HPA's defaults; one with any set gets only
    those (the others are off)."""
    if not isinstance(data, dict):
        return data
    data = dict(data)
    if "max_add" not in data and "max_add_percent" not in data:
        data["max_add"] = DEFAULT_MAX_ADD
        data["max_add_percent"] = DEFAULT_MAX_ADD_PERCENT
    if "max_remove" not in data and "max_remove_percent" not in data:
        data["max_remove_percent"] = DEFAULT_MAX_REMOVE_PERCENT
    return data


_S = TypeVar("_S")


def _provider_section(name: str, v: _S | None, info: ValidationInfo, needs: str) -> _S | None:
    """A ``[scalers.<name>]`` table is given exactly when ``provider = "<name>"``."""
    provider = info.data.get("provider")
    if provider == name and v is None:
        raise ValueError(f'provider = "{name}" {needs}')
    if provider != name and provider is not None and v is not None:
        raise ValueError(f'only applies to provider = "{name}"; remove it or change provider')
    return v


class ScalerConfig(_Model):
    """One ``[[scalers]]`` entry: how one pool is scaled."""

    pool: str = Field(min_length=1, description="the pool in [pools] whose members this manages")
    provider: Literal["process", "docker", "swarm"] = "process"
    min: int = Field(default=1, ge=0, le=1000, description="0: scale to zero when idle")
    max: int = Field(ge=1, le=1000)
    metric: Metric = "inflight_per_backend"
    target: float = Field(gt=0, description="the per-member value of metric to hold")
    tolerance: float = Field(default=0.1, ge=0, lt=1)
    interval: Duration = Field(default=5.0, ge=0.1, le=3600)
    metric_window: Duration = Field(
        default=10.0, gt=0, le=60, description="rps and latency are averaged over this"
    )
    scale_up_stabilization: Duration = Field(default=0.0, le=3600)
    scale_down_stabilization: Duration = Field(default=300.0, le=3600)
    period: Duration = Field(default=15.0, gt=0, le=1800, description="of the step limits")
    max_add: int | None = Field(default=None, ge=1)
    max_add_percent: float | None = Field(default=None, gt=0)
    max_remove: int | None = Field(default=None, ge=1)
    max_remove_percent: float | None = Field(default=None, gt=0, le=100)
    scale_to_zero_after: Duration = Field(
        default=60.0, description="min = 0: idle time before the last member goes"
    )
    panic_window: Duration = Field(
        default=6.0, ge=0, le=600, description="the short window of panic mode; 0: no panic mode"
    )
    panic_threshold: float = Field(
        default=2.0, description="panic at this many times the target over panic_window"
    )
    drain_timeout: Duration = Field(default=30.0, description="wait for in-flight requests")
    start_timeout: Duration = Field(default=30.0, gt=0, description="until a member listens")
    stop_timeout: Duration = Field(default=10.0, description="SIGTERM, then SIGKILL after")
    backoff: Duration = Field(default=2.0, gt=0, description="after a failed start, doubling")
    backoff_max: Duration = Field(default=60.0, gt=0)
    weight: int = Field(default=1, ge=1, le=1000, description="weight of registered members")
    publish_events: bool = Field(default=True, description="send decisions to lb (GET /v1/events)")
    # The lb instances this entry keeps in step (the block above ``_step_defaults``).
    local_lb: bool = Field(
        default=True, description="keep the lb of [lb] control_socket in step (name: local)"
    )
    lbs: list[LbInstance] = Field(
        default_factory=list, description="other lb instances, through their admin listener"
    )
    process: ProcessSettings | None = Field(default=None, validate_default=True)
    docker: DockerSettings | None = Field(default=None, validate_default=True)
    swarm: SwarmSettings | None = Field(default=None, validate_default=True)

    @model_validator(mode="before")
    @classmethod
    def _defaults(cls, data: Any) -> Any:
        return _step_defaults(data)

    @field_validator("max")
    @classmethod
    def _max(cls, v: int, info: ValidationInfo) -> int:
        lo = info.data.get("min")
        if lo is not None and v < lo:
            raise ValueError(f"must be at least min ({lo}); raise max or lower min")
        return v

    @field_validator("scale_to_zero_after")
    @classmethod
    def _scale_to_zero_after(cls, v: float) -> float:
        if not 0 < v <= 86400:
            raise ValueError(
                "must be above 0s and at most 1 day: how long the pool has no demand before "
                'its last member stops (e.g. "60s"); to keep a member, set min = 1'
            )
        return v

    @field_validator("panic_threshold")
    @classmethod
    def _panic_threshold(cls, v: float) -> float:
        if not 1 < v <= 100:
            raise ValueError(
                "must be above 1 and at most 100: panic starts when the short window's load is "
                "this many times the target (e.g. 2.0); to turn panic mode off set "
                'panic_window = "0s"'
            )
        return v

    @field_validator("backoff_max")
    @classmethod
    def _backoff_max(cls, v: float, info: ValidationInfo) -> float:
        base = info.data.get("backoff")
        if base is not None and v < base:
            raise ValueError(f"must be at least backoff ({base:g}s); raise it or lower backoff")
        return v

    @field_validator("process")
    @classmethod
    def _process(cls, v: ProcessSettings | None, info: ValidationInfo) -> ProcessSettings | None:
        return _provider_section(
            "process",
            v,
            info,
            "needs [scalers.process] with a command, e.g. "
            'command = "{python} -m lb.demo_server --port {port}"',
        )

    @field_validator("docker")
    @classmethod
    def _docker(cls, v: DockerSettings | None, info: ValidationInfo) -> DockerSettings | None:
        return _provider_section("docker", v, info, "needs [scalers.docker] with an image")

    @field_validator("swarm")
    @classmethod
    def _swarm(cls, v: SwarmSettings | None, info: ValidationInfo) -> SwarmSettings | None:
        return _provider_section("swarm", v, info, "needs [scalers.swarm] with an image")

    @model_validator(mode="after")
    def _lbs(self) -> ScalerConfig:
        _check_lbs(self.local_lb, self.lbs)
        return self

    @model_validator(mode="after")
    def _zero(self) -> ScalerConfig:
        if "scale_to_zero_after" in self.model_fields_set and self.min > 0:
            raise field_error(
                "scalers",
                ("scale_to_zero_after",),
                self.scale_to_zero_after,
                f"only applies with min = 0 (min is {self.min}); set min = 0 to let the pool "
                "go to zero members when idle, or remove it",
            )
        return self

    @model_validator(mode="after")
    def _port_range_size(self) -> ScalerConfig:
        section, port_range = (
            ("process", self.process.port_range)
            if self.process is not None
            else ("docker", self.docker.port_range)
            if self.docker is not None and self.docker.network_mode == "host"
            else ("swarm", self.swarm.port_range)
            if self.swarm is not None
            else ("", "")
        )
        if section:
            lo, hi = parse_port_range(port_range)
            if hi - lo + 1 < self.max:
                raise field_error(
                    "scalers",
                    (section, "port_range"),
                    port_range,
                    f"{hi - lo + 1} port(s) but max = {self.max}: each member needs its own "
                    "port; widen the range or lower max",
                )
        return self

    def settings_text(self) -> str:
        if self.swarm is not None:
            return f"swarm image {self.swarm.image} (a service per member, host network)"
        if self.docker is not None:
            return f"docker image {self.docker.image} ({self.docker.network_mode} network)"
        assert self.process is not None
        return f"process {self.process.command!r}"


_ENTRIES = TypeAdapter(list[ScalerConfig])


def parse_scalers(entries: list[dict[str, Any]]) -> list[ScalerConfig]:
    """Validate raw ``[[scalers]]`` tables. Raises pydantic's ValidationError, whose locations
    start at the entry index (``(0, "max")``)."""
    return _ENTRIES.validate_python(entries)


def check_scalers(entries: list[dict[str, Any]], validated: Mapping[str, Any]) -> None:
    """lb's check of ``[[scalers]]`` (a ``lb.config.SectionCheck``, registered in the
    ``lb.config_checks`` entry-point group by pyproject.toml): every problem of the section, as
    validation errors under ``scalers``, then the references to pools (``ConfigFieldError``
    with the full path). ``validated`` is what ``lb.config.Config`` validated before it."""
    pools: Mapping[str, Any] | None = validated.get("pools")
    parsed = parse_scalers(entries)
    seen: dict[str, int] = {}
    for i, sc in enumerate(parsed):
        if pools is not None and sc.pool not in pools:
            known = ", ".join(sorted(pools))
            raise ConfigFieldError(
                f"scalers[{i}].pool", sc.pool, f"no such pool; defined pools: {known}"
            )
        if sc.pool in seen:
            raise ConfigFieldError(
                f"scalers[{i}].pool",
                sc.pool,
                f"scalers[{seen[sc.pool]}] already scales this pool; one entry per pool",
            )
        seen[sc.pool] = i


def scalers_of(config: Config) -> list[ScalerConfig]:
    """The typed entries of a config that ``lb.config`` has validated."""
    return parse_scalers(list(config.scalers))


def run_dir(config: Config, config_path: str | Path) -> Path:
    """Where the scaler keeps its files: the folder of lb's ``state_file``."""
    state = Path(config.lb.state_file)
    if not state.is_absolute():
        state = Path(config_path).resolve().parent / state
    return state.parent


def resolve(config_path: str | Path, value: str) -> Path:
    p = Path(value)
    return p if p.is_absolute() else Path(config_path).resolve().parent / p


__all__ = [
    "METRICS",
    "DockerSettings",
    "LbInstance",
    "ProcessSettings",
    "ScalerConfig",
    "SwarmSettings",
    "check_scalers",
    "parse_duration",
    "parse_memory",
    "parse_port_range",
    "parse_scalers",
    "resolve",
    "run_dir",
    "scalers_of",
]

"""Strategy names → strategy factories: built-ins, ``package.module:Class`` and entry points.

Owns: the table of built-in strategies and the rules for loading third-party ones. Never does:
I/O beyond importing the module a config names, and never lets a plugin shadow a built-in
name (a config that says ``least_conn`` always gets ours).

Resolution order for a name:

1. a built-in (``BUILTIN_STRATEGIES``);
2. ``"package.module:Class"`` (anything with a colon): import the module, then follow the
   dotted attribute path after the colon;
3. otherwise a name in the entry-point group ``lb.strategies`` of an installed distribution,
   e.g. ``[project.entry-points."lb.strategies"] fancy = "fancy_lb.strategy:Fancy"``.

Whatever cannot be resolved raises ``UnknownStrategy`` (a ``ValueError``, so config validation
reports it like any other bad value) with a message that lists what would be valid.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from importlib.metadata import entry_points

from lb.balancing.base import Strategy
from lb.balancing.consistent_hash import ConsistentHash
from lb.balancing.least_conn import LeastConn
from lb.balancing.options import StrategyOptions
from lb.balancing.peak_ewma import PeakEwma
from lb.balancing.random_two import RandomTwo
from lb.balancing.round_robin import RoundRobin
from lb.balancing.weighted import WeightedRoundRobin

ENTRY_POINT_GROUP = "lb.strategies"

StrategyFactory = Callable[[StrategyOptions], Strategy]

_BUILTINS: Mapping[str, StrategyFactory] = {
    "round_robin": RoundRobin,
    "weighted": WeightedRoundRobin,
    "least_conn": LeastConn,
    "consistent_hash": ConsistentHash,
    "random_two": RandomTwo,
    "peak_ewma": PeakEwma,
}

BUILTIN_STRATEGIES: tuple[str, ...] = tuple(_BUILTINS)


class UnknownStrategy(ValueError):
    """A strategy name that is not built in, not importable and not an installed plugin."""


def _help() -> str:
    return (
        f"built-in strategies are {', '.join(BUILTIN_STRATEGIES)}; a third-party strategy is "
        f"named as 'package.module:Class' (an importable class taking StrategyOptions, with "
        f"update(backends) and pick(key)) or by the name it registers in the entry-point "
        f"group {ENTRY_POINT_GROUP!r}"
    )


def resolve_strategy(name: str) -> StrategyFactory:
    """The factory (usually a class) for ``name``; raises ``UnknownStrategy``."""
    builtin = _BUILTINS.get(name)
    if builtin is not None:
        return builtin
    obj = _load_reference(name) if ":" in name else _load_entry_point(name)
    if not callable(obj):
        raise UnknownStrategy(
            f"strategy {name!r} names a {type(obj).__name__!r} object, not a strategy class"
        )
    if isinstance(obj, type) and not all(
        callable(getattr(obj, method, None)) for method in ("update", "pick")
    ):
        raise UnknownStrategy(
            f"strategy {name!r} ({obj.__module__}.{obj.__qualname__}) does not implement the "
            "Strategy protocol: it needs update(backends) and pick(key) methods"
        )
    factory: StrategyFactory = obj
    return factory


def create_strategy(name: str, options: StrategyOptions) -> Strategy:
    """A new strategy instance for ``name``; raises ``UnknownStrategy``."""
    strategy = resolve_strategy(name)(options)
    if not isinstance(strategy, Strategy):
        raise UnknownStrategy(
            f"strategy {name!r} made a {type(strategy).__name__!r} object, which does not "
            "implement the Strategy protocol: it needs update(backends) and pick(key) methods"
        )
    return strategy


def _load_reference(name: str) -> object:
    module_name, _, attr_path = name.partition(":")
    if not module_name or not attr_path or module_name.startswith("."):
        raise UnknownStrategy(f"strategy {name!r} is not of the form 'package.module:Class'")
    try:
        obj: object = importlib.import_module(module_name)
    except ImportError as exc:
        raise UnknownStrategy(
            f"strategy {name!r}: cannot import module {module_name!r} ({exc})"
        ) from exc
    for attr in attr_path.split("."):
        try:
            obj = getattr(obj, attr)
        except AttributeError:
            raise UnknownStrategy(
                f"strategy {name!r}: module {module_name!r} has no attribute {attr_path!r}"
            ) from None
    return obj


def _load_entry_point(name: str) -> object:
    found = entry_points(group=ENTRY_POINT_GROUP, name=name)
    if not found:
        installed = sorted(entry_points(group=ENTRY_POINT_GROUP).names)
        plugins = f"; installed plugins: {', '.join(installed)}" if installed else ""
        raise UnknownStrategy(f"unknown strategy {name!r}: {_help()}{plugins}")
    if len(found) > 1:
        sources = sorted(ep.value for ep in found)
        raise UnknownStrategy(
            f"strategy {name!r} is registered by several installed packages ({', '.join(sources)});"
            " name the one you mean as 'package.module:Class'"
        )
    (entry_point,) = found
    try:
        obj: object = entry_point.load()
    except (ImportError, AttributeError) as exc:
        raise UnknownStrategy(
            f"strategy {name!r}: cannot load entry point {entry_point.value!r} ({exc})"
        ) from exc
    return obj

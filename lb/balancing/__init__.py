"""Load-balancing strategies: pure code that picks a backend from plain values.

Owns: the ``Strategy`` protocol, the built-in strategies and the registry that turns a config
name into a strategy. Never does: I/O, asyncio, or any state the supervisor owns; strategies
read ``Backend`` values and ``active`` counts, and return a choice.
"""

from lb.balancing.base import (
    LatencyTracking,
    LoadTracking,
    Strategy,
    needs_key,
    tracks_latency,
    tracks_load,
)
from lb.balancing.consistent_hash import ConsistentHash
from lb.balancing.least_conn import LeastConn
from lb.balancing.options import StrategyOptions
from lb.balancing.peak_ewma import PeakEwma
from lb.balancing.random_two import RandomTwo
from lb.balancing.registry import (
    BUILTIN_STRATEGIES,
    ENTRY_POINT_GROUP,
    StrategyFactory,
    UnknownStrategy,
    create_strategy,
    resolve_strategy,
)
from lb.balancing.round_robin import RoundRobin
from lb.balancing.weighted import WeightedRoundRobin

__all__ = [
    "BUILTIN_STRATEGIES",
    "ENTRY_POINT_GROUP",
    "ConsistentHash",
    "LatencyTracking",
    "LeastConn",
    "LoadTracking",
    "PeakEwma",
    "RandomTwo",
    "RoundRobin",
    "Strategy",
    "StrategyFactory",
    "StrategyOptions",
    "UnknownStrategy",
    "WeightedRoundRobin",
    "create_strategy",
    "needs_key",
    "resolve_strategy",
    "tracks_latency",
    "tracks_load",
]

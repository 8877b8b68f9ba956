"""Options handed to every strategy constructor, built from a pool's config."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class StrategyOptions:
    # consistent_hash: upper bound on a backend's load, as a factor of the mean (HAProxy's
    # hash-balance-factor / 100). None disables the bound.
    bounded_load: float | None = None
    # consistent_hash: virtual nodes per unit of weight on the ring.
    vnodes: int = 160

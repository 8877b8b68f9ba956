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
    # peak_ewma (seconds): how fast an estimate forgets; the lowest an estimate reads; the
    # estimate of a backend with no sample yet, while nothing / something is in flight to it.
    ewma_decay: float = 10.0
    ewma_floor: float = 0.001
    ewma_initial_rtt: float = 0.001
    ewma_penalty: float = 1.0
    # peak_ewma: how many distinct backends a pick compares (2: power of two choices).
    ewma_choices: int = 2

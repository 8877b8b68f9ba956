"""A tiny third-party strategy, loaded by name in ``test_balancing_registry``."""

from __future__ import annotations

from collections.abc import Sequence

from lb.balancing import StrategyOptions
from lb.model import Backend


class FirstEligible:
    """Always the first eligible backend: an active/passive pair."""

    __slots__ = ("backends", "options")

    def __init__(self, options: StrategyOptions) -> None:
        self.options = options
        self.backends: list[Backend] = []

    def update(self, backends: Sequence[Backend]) -> None:
        self.backends = [b for b in backends if b.eligible]

    def pick(self, key: bytes | None) -> Backend | None:
        return self.backends[0] if self.backends else None


class Namespace:
    FirstEligible = FirstEligible


class NotAStrategy:
    def __init__(self, options: StrategyOptions) -> None:
        self.options = options


def factory_returning_junk(options: StrategyOptions) -> object:
    return object()


NOT_CALLABLE = 42

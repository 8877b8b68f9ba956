"""Long strategy work in slices on the worker's loop: how a ring of 10,000 backends is built
without blocking every connection of the worker for a second.

Owns: the process's *scheduler*, the one function a strategy hands a step of long work to (a
first build of a big ``consistent_hash`` ring), and ``run_on(loop)``, the scheduler a worker
installs. Never does: I/O, or import asyncio: it needs only a loop's ``call_soon``.

A step is ``step(deadline) -> bool``: do work until ``time.perf_counter()`` passes
``deadline`` (one unit of work may overrun it a little) and say whether work remains. The
scheduler runs one step per loop iteration, each with ``SLICE_S`` of time, between the
iteration's I/O callbacks, until the step says it is done. Without a scheduler (unit tests,
the micro benchmarks, a strategy used on its own), a strategy does all its work at once, as
before: the result is the same, only when it happens differs.

The scheduler holds a step weakly: a strategy that was replaced (a reload changed its
settings) before its build finished is dropped, and its build with it, rather than finished
for nobody.
"""

from __future__ import annotations

import math
import time
import weakref
from collections.abc import Callable
from typing import Protocol

#: A step of long work: work until the deadline (``time.perf_counter()``); True: more remains.
Step = Callable[[float], bool]
Scheduler = Callable[[Step], None]

#: Time a step may take per loop iteration (seconds): well under the 10 ms a control-plane
#: change may block a worker's loop (issue 17).
SLICE_S = 0.002

_scheduler: Scheduler | None = None


class _Loop(Protocol):
    def call_soon(self, callback: Callable[[], object]) -> object: ...

    def is_running(self) -> bool: ...


def set_scheduler(scheduler: Scheduler | None) -> Scheduler | None:
    """Install the process's scheduler (None: do long work at once); returns the previous."""
    global _scheduler
    previous, _scheduler = _scheduler, scheduler
    return previous


def scheduler() -> Scheduler | None:
    """The installed scheduler, or None."""
    return _scheduler


def _hold(step: Step) -> Callable[[], Step | None]:
    """A bound method weakly (its object may be dropped), any other step strongly."""
    if hasattr(step, "__self__"):
        return weakref.WeakMethod(step)
    return lambda: step


def run_on(
    loop: _Loop, slice_s: float = SLICE_S, on_slice: Callable[[float], None] | None = None
) -> Scheduler:
    """A scheduler running each step for ``slice_s`` once per iteration of ``loop``;
    ``on_slice``, if given, hears the CPU time each slice took (benchmarks).

    ``call_soon`` from inside a callback runs in the next iteration, after the loop has
    polled for I/O, so traffic is served between two slices. A loop that is not running
    (stopped, or closed) gets no slices: the work is done at once. A step that is a bound
    method is held weakly (its object may be dropped, see above); any other callable is held
    until it is done."""

    def schedule(step: Step) -> None:
        if not loop.is_running():  # a loop stopped or closed (tests run many): work at once
            while step(math.inf):
                pass
            return
        loop.call_soon(_Run(_hold(step), loop, slice_s, on_slice))

    return schedule


class _Run:
    """One step's slices on a loop: an object rather than a closure that schedules itself,
    which would be a reference cycle, keeping what it holds until a garbage collection."""

    __slots__ = ("loop", "on_slice", "ref", "slice_s")

    def __init__(
        self,
        ref: Callable[[], Step | None],
        loop: _Loop,
        slice_s: float,
        on_slice: Callable[[float], None] | None,
    ) -> None:
        self.ref, self.loop, self.slice_s, self.on_slice = ref, loop, slice_s, on_slice

    def __call__(self) -> None:
        live = self.ref()
        if live is None:
            return
        c0 = time.thread_time()
        more = live(time.perf_counter() + self.slice_s)
        if self.on_slice is not None:
            self.on_slice(time.thread_time() - c0)
        if more:
            self.loop.call_soon(self)

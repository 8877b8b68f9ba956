"""benchmarks.cpu --sched: the scheduler counters and CPU samples it reports come from /proc."""

from __future__ import annotations

import os
import time

from benchmarks import cpu


def _spin(seconds: float) -> None:
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


def test_counters_grow_with_the_cpu_time_a_process_uses() -> None:
    before = cpu.SchedCounts.of(os.getpid())
    _spin(0.05)
    time.sleep(0.01)  # a voluntary switch: the process sleeps
    after = cpu.SchedCounts.of(os.getpid())
    assert after.run_ns - before.run_ns >= 40_000_000
    assert after.cpu_ticks >= before.cpu_ticks
    assert after.voluntary > before.voluntary


def test_a_gone_process_reads_as_zero_and_off_every_cpu() -> None:
    gone = 2**22 + 12345  # above the default pid_max: no such process
    assert cpu.SchedCounts.of(gone) == cpu.SchedCounts()
    assert cpu._on_cpu(gone) == -1


def test_the_sampler_finds_a_process_on_its_own_cpu() -> None:
    me = os.getpid()
    assert cpu._on_cpu(me) in os.sched_getaffinity(0)
    sampler = cpu._Sampler([me], wrk=me, backend=[me])
    sampler.start()
    time.sleep(0.1)
    sampler.stop.set()
    sampler.join()
    assert sampler.samples
    # The same process as "wrk" and "backend": always on the same CPU as itself.
    assert sampler.shares(me) == (1.0, 1.0)

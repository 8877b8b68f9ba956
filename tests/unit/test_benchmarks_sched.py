"""benchmarks.cpu --sched: the scheduler counters and CPU samples it reports come from /proc."""

from __future__ import annotations

import os
import subprocess
import sys
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


def test_a_process_is_where_its_busiest_thread_is() -> None:
    """wrk's main thread only waits for its worker thread: the sample must follow the
    thread that works. A child process like that: its main thread waits on the first CPU,
    its worker thread spins on the last one."""
    cpus = sorted(os.sched_getaffinity(0))
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import os, threading, time\n"
            f"os.sched_setaffinity(0, {{{cpus[0]}}})\n"
            "def spin():\n"
            f"    os.sched_setaffinity(0, {{{cpus[-1]}}})\n"
            "    end = time.process_time() + 1.5\n"
            "    while time.process_time() < end: pass\n"
            "t = threading.Thread(target=spin); t.start(); t.join()\n",
        ]
    )
    try:
        time.sleep(0.8)
        assert cpu._on_cpu(child.pid) == cpus[-1]
    finally:
        child.kill()
        child.wait()

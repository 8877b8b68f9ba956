"""The benchmark harness keeps working: its lb-only smoke run completes without wrk errors.

This checks the harness, not speed (benchmarks are never timed assertions here).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT


@pytest.mark.skipif(
    not (shutil.which("wrk") and shutil.which("nginx")), reason="needs wrk and nginx (Debian)"
)
def test_benchmark_smoke_run(tmp_path: Path) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--smoke", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    results = list(tmp_path.glob("*/results.json"))
    assert results, r.stdout[-2000:]

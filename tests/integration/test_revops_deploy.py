"""An operator's first day: the systemd units point at documentation that an install puts
there (review "revops", benchmarks/results/revops.md).

`systemctl help lb` opens each `Documentation=` URL of the unit. The units say
``file:///opt/lb/share/doc/lb/deploy.md`` for a wheel installed into ``/opt/lb`` (README,
docs/deploy.md), so the wheel must carry that file as data: ``lb-VERSION.data/data/<path>``.
The test builds the wheel from this checkout (pure Python, ``LB_NO_EXTENSIONS=1``: the data
files do not depend on the compiled modules) and reads its file list.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.helpers import ROOT

PREFIX = "/opt/lb/"


def documentation_paths() -> list[str]:
    """Paths below /opt/lb that the units' Documentation= lines name."""
    out = []
    for unit in sorted((ROOT / "deploy" / "systemd").glob("*.service")):
        for line in unit.read_text().splitlines():
            if line.startswith("Documentation="):
                for url in line.split("=", 1)[1].split():
                    m = re.fullmatch(r"file://(/.+)", url)
                    if m and m.group(1).startswith(PREFIX):
                        out.append(m.group(1)[len(PREFIX) :])
    return sorted(set(out))


def test_units_name_documentation_under_the_install_prefix() -> None:
    assert documentation_paths(), "no Documentation=file:///opt/lb/... in deploy/systemd"


def test_the_wheel_installs_the_units_documentation(tmp_path: Path) -> None:
    env = {**os.environ, "LB_NO_EXTENSIONS": "1"}
    src = tmp_path / "src"  # pip builds in the tree it is given: not in this checkout
    shutil.copytree(
        ROOT,
        src,
        ignore=shutil.ignore_patterns(".*", "build", "dist", "*.egg-info", "*.so", "__pycache__"),
    )
    r = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path), str(src)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    if r.returncode != 0:
        pytest.skip(f"cannot build a wheel here (no package index?): {r.stderr[-500:]}")
    (wheel,) = tmp_path.glob("lb-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    data = {n.split("/data/", 1)[1] for n in names if ".data/data/" in n}
    missing = [p for p in documentation_paths() if p not in data]
    assert not missing, f"the wheel installs no {missing} (its data files: {sorted(data)})"

"""The wheel that ``python -m build`` makes (in the image's build stage, from the sdist it made
first: tests/docker/lb_image.py copies both out) holds the compiled modules, installs in a
fresh venv on this machine, and runs: ``lb check``, then ``lb run`` proxying a request, with
every compiled module loaded (``LB_REQUIRE_SPEEDUPS=1``)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from lb._compiled import COMPILED_MODULES, SPEEDUPS
from tests.docker.lb_image import Built, lb_image, wait_until
from tests.helpers import ProcessGroup, free_port, http_get, to_toml

__all__ = ["lb_image"]  # fixture

pytestmark = pytest.mark.timeout(1800)  # the first test may build the image (lb_image.py)


def test_sdist_and_wheel_hold_what_a_compiled_install_needs(lb_image: Built) -> None:
    files = sorted(p.name for p in lb_image.dist.iterdir())
    sdists = [f for f in files if f.endswith(".tar.gz")]
    wheels = [f for f in files if f.endswith(".whl")]
    assert len(sdists) == 1 and len(wheels) == 1, files
    assert "-cp311-cp311-linux_" in wheels[0], wheels[0]  # a platform wheel: compiled
    names = zipfile.ZipFile(lb_image.dist / wheels[0]).namelist()
    for module in (SPEEDUPS, *COMPILED_MODULES):
        stem = module.replace(".", "/")
        assert any(n.startswith(stem + ".cpython-311") and n.endswith(".so") for n in names), module
    with tarfile.open(lb_image.dist / sdists[0]) as sdist:
        members = sdist.getnames()
    for needed in ("setup.py", "pyproject.toml", "lb/http/_speedups.pyx", "lb/proxy/pool.pxd"):
        assert any(m.endswith("/" + needed) for m in members), needed


def test_wheel_installs_in_a_fresh_venv_and_runs_compiled(
    lb_image: Built, tmp_path: Path, procs: ProcessGroup
) -> None:
    wheel = next(lb_image.dist.glob("*.whl"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    bin_ = venv / "bin"
    pip = subprocess.run(
        [str(bin_ / "pip"), "install", "--quiet", str(wheel)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert pip.returncode == 0, pip.stderr
    # Run outside the checkout, so that nothing can import lb from the source tree.
    env = {**os.environ, "LB_REQUIRE_SPEEDUPS": "1"}
    env.pop("PYTHONPATH", None)
    report = subprocess.run(
        [
            str(bin_ / "python"),
            "-c",
            "import lb, lb._compiled as c; print(lb.__file__); print(c.report())",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env=env,
    )
    assert report.returncode == 0, report.stderr
    assert report.stdout.startswith(str(venv)), report.stdout
    assert "lb.http._speedups: loaded" in report.stdout
    assert report.stdout.count(": compiled") == len(COMPILED_MODULES), report.stdout

    backend = procs.backend("wheel1")
    port = free_port()
    config = tmp_path / "lb.toml"
    config.write_text(
        to_toml(
            {
                "lb": {"workers": 1, "grace": "1s"},
                "listeners": [
                    {"name": "web", "bind": f"127.0.0.1:{port}", "mode": "http", "pool": "p"}
                ],
                "pools": {"p": {"backends": [{"address": f"127.0.0.1:{backend.port}"}]}},
            }
        )
    )
    check = subprocess.run(
        [str(bin_ / "lb"), "check", "-c", str(config)],
        capture_output=True, text=True, timeout=60, cwd=tmp_path, env=env,
    )  # fmt: skip
    assert check.returncode == 0 and "OK" in check.stdout, check
    log = (tmp_path / "lb-wheel.log").open("wb")
    lb = subprocess.Popen(
        [str(bin_ / "lb"), "run", "-c", str(config)],
        cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    log.close()
    try:

        def answers() -> bool:
            try:
                status, _, body = http_get(port, "/", timeout=2)
            except OSError:
                return False
            return status == 200 and b"wheel1" in body

        wait_until(answers, 30, "lb from the wheel proxies to the backend")
        workers = Path(f"/proc/{lb.pid}/task/{lb.pid}/children").read_text().split()
        assert workers, "lb runs a worker process"
        maps = Path(f"/proc/{workers[0]}/maps").read_text()
        assert f"{venv}/lib/python3.11/site-packages/lb/proxy/exchange.cpython-311" in maps
        lb.send_signal(signal.SIGTERM)
        assert lb.wait(timeout=30) == 0
    finally:
        if lb.poll() is None:
            lb.kill()
            lb.wait()

"""lb does not depend on scaler; scaler plugs into lb.

``lint-imports`` (``make lint``, contracts in pyproject.toml) holds the import graph's
directions. These tests hold what it does not see: what importing lb actually loads, imports
under ``if TYPE_CHECKING:`` (which the contracts leave out), and the entry point through which
``lb check`` still runs the scaler's check of ``[[scalers]]``.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import Any

import grimp
import pytest

import lb.config
from lb.config import CONFIG_CHECKS, ConfigError, parse_config, section_checks

ROOT = Path(__file__).resolve().parents[2]

# Imports every module of lb (not ``__main__``, which runs the CLI), then parses a config
# without [[scalers]]: neither may load scaler. Then one with it: that runs the scaler's check.
_IMPORT_ALL = """
import importlib, pkgutil, sys
import lb
def fail(name):  # walk_packages would skip a package that fails to import
    raise SystemExit(f"cannot import {name}")
names = [m.name for m in pkgutil.walk_packages(lb.__path__, "lb.", onerror=fail)]
for name in names:
    if name.rsplit(".", 1)[-1] != "__main__":
        importlib.import_module(name)
from lb.config import parse_config
base = {
    "listeners": [{"name": "web", "bind": "127.0.0.1:8080", "mode": "http", "pool": "web"}],
    "pools": {"web": {}},
}
parse_config(base)
print(len(names), sorted(m for m in sys.modules if m.split(".")[0] == "scaler"))
parse_config({**base, "scalers": [{"pool": "web", "max": 2, "target": 5,
                                   "process": {"command": "/bin/true {port}"}}]})
print("scaler.config" in sys.modules)
"""


def test_importing_every_lb_module_loads_no_scaler_module() -> None:
    out = subprocess.run(
        [sys.executable, "-c", _IMPORT_ALL],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    walked, checked = out.stdout.splitlines()
    count, scaler_modules = walked.split(" ", 1)
    assert int(count) > 40, "pkgutil found too few lb modules: is the walk broken?"
    assert scaler_modules == "[]", f"importing lb loaded {scaler_modules}"
    # A config with [[scalers]] is checked by scaler's own code, found by entry point.
    assert checked == "True"


def test_no_lb_module_imports_scaler_even_for_type_checking() -> None:
    # The lint-imports contracts leave `if TYPE_CHECKING:` imports out; this one counts them.
    graph = grimp.build_graph("lb", "scaler", cache_dir=None)
    chains = graph.find_shortest_chains(importer="lb", imported="scaler")
    assert not chains, f"lb imports scaler: {sorted(chains)}"


def test_the_scaler_registers_its_check_of_the_scalers_section() -> None:
    from scaler.config import check_scalers

    assert section_checks("scalers") == (check_scalers,), (
        f"no {CONFIG_CHECKS} entry point named 'scalers' resolves to scaler.config:check_scalers;"
        " the installed metadata is older than pyproject.toml: reinstall (pip install -e .)"
    )


@pytest.fixture
def fake_checks(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[EntryPoint]]:
    """Replace the installed ``lb.config_checks`` entry points with the ones a test adds."""
    registered: list[EntryPoint] = []

    def entry_points(*, group: str, name: str) -> list[EntryPoint]:
        return [ep for ep in registered if ep.group == group and ep.name == name]

    monkeypatch.setattr(lb.config, "entry_points", entry_points)
    section_checks.cache_clear()
    yield registered
    section_checks.cache_clear()


def _config(**sections: Any) -> dict[str, Any]:
    return {
        "listeners": [{"name": "web", "bind": "127.0.0.1:8080", "pool": "web"}],
        "pools": {"web": {}},
        **sections,
    }


def refuse_all(section: Any, validated: Any) -> None:
    raise ValueError(f"refused, with pools {sorted(validated['pools'])}")


def test_a_registered_check_sees_the_section_and_what_was_validated_before_it(
    fake_checks: list[EntryPoint],
) -> None:
    fake_checks.append(EntryPoint("scalers", f"{__name__}:refuse_all", CONFIG_CHECKS))
    with pytest.raises(ConfigError) as info:
        parse_config(_config(scalers=[{"pool": "web"}]), "config.toml")
    assert "config.toml: invalid configuration" in str(info.value)
    assert "scalers: [{'pool': 'web'}] is invalid: refused, with pools ['web']" in str(info.value)
    parse_config(_config())  # no section, no check


def test_without_a_registered_check_lb_keeps_the_section_unchecked(
    fake_checks: list[EntryPoint],
) -> None:
    assert parse_config(_config(scalers=[{"anything": 1}])).scalers == [{"anything": 1}]


def test_a_check_that_cannot_load_is_a_config_error_that_says_so(
    fake_checks: list[EntryPoint],
) -> None:
    fake_checks.append(EntryPoint("scalers", "no_such_package.config:check", CONFIG_CHECKS))
    with pytest.raises(ConfigError) as info:
        parse_config(_config(scalers=[]), "config.toml")
    msg = str(info.value)
    assert "scalers: [] is invalid: cannot load no_such_package.config:check" in msg
    assert "reinstall the package that registers it, or remove the section" in msg

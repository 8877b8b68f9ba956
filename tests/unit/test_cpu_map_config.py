"""``[lb] cpu_map``: CPU lists, their errors, and which CPUs each worker gets."""

from __future__ import annotations

import os
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lb.config import ConfigError, format_cpu_list, parse_config, parse_cpu_list

CPUS = sorted(os.sched_getaffinity(0))


def config(workers: int, cpu_map: object) -> dict[str, Any]:
    return {
        "lb": {"workers": workers, "cpu_map": cpu_map},
        "listeners": [{"name": "l", "bind": "127.0.0.1:8000", "pool": "web"}],
        "pools": {"web": {"backends": [{"address": "127.0.0.1:9001"}]}},
    }


def error_for(workers: int, cpu_map: object) -> str:
    with pytest.raises(ConfigError) as ei:
        parse_config(config(workers, cpu_map), "conf.toml")
    return str(ei.value)


@pytest.mark.parametrize(
    ("text", "cpus"),
    [("0", {0}), ("2-3", {2, 3}), ("0,2,4-5", {0, 2, 4, 5}), (" 1 , 3 ", {1, 3}), ("7-7", {7})],
)
def test_cpu_lists(text: str, cpus: set[int]) -> None:
    assert parse_cpu_list(text) == cpus


@pytest.mark.parametrize("text", ["", "a", "0-", "-1", "1-0", "0,,1", "0.5", "1:2"])
def test_bad_cpu_lists(text: str) -> None:
    with pytest.raises(ValueError):
        parse_cpu_list(text)


@given(st.frozensets(st.integers(0, 300), min_size=1))
def test_format_and_parse_round_trip(cpus: frozenset[int]) -> None:
    text = format_cpu_list(cpus)
    assert parse_cpu_list(text) == cpus
    assert len(text.split(",")) == 1 + sum(1 for c in cpus if c + 1 not in cpus and c < max(cpus))


def test_auto_takes_the_usable_cpus_in_turn() -> None:
    lb = parse_config(config(len(CPUS) + 1, "auto")).lb
    got = [lb.cpus_of(i) for i in range(1, len(CPUS) + 2)]
    assert got == [frozenset({c}) for c in CPUS] + [frozenset({CPUS[0]})]


def test_unset_pins_nothing() -> None:
    cfg = config(2, None)
    del cfg["lb"]["cpu_map"]
    assert parse_config(cfg).lb.cpus_of(1) is None


def test_one_list_per_worker_and_integers() -> None:
    lb = parse_config(config(2, [CPUS[-1], str(CPUS[0])])).lb
    assert lb.cpus_of(1) == {CPUS[-1]} and lb.cpus_of(2) == {CPUS[0]}
    # workers = 0: one entry, for the one process (index 0)
    assert parse_config(config(0, [str(CPUS[0])])).lb.cpus_of(0) == {CPUS[0]}


def test_errors_name_the_field_and_the_fix() -> None:
    msg = error_for(2, ["0"])
    assert "conf.toml" in msg and "lb.cpu_map" in msg and "1 CPU list(s) for 2 worker" in msg
    msg = error_for(1, ["0-"])
    assert "lb.cpu_map[0]" in msg and 'such as "0", "2-3"' in msg
    far = max(CPUS) + 1000
    msg = error_for(2, [str(CPUS[0]), f"{CPUS[0]},{far}"])
    assert "lb.cpu_map[1]" in msg and f"CPU {far} is not one lb may run on" in msg
    assert format_cpu_list(frozenset(CPUS)) in msg
    msg = error_for(1, "all")
    assert "lb.cpu_map" in msg and '"auto", or one CPU list per worker' in msg

"""Fixtures of the chaos suite: a tagged lab per schedule, cleaned up whatever happened; the
Docker engine and its per-test label come from tests/docker (skip without an engine, fail
under LB_REQUIRE_DOCKER=1)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.chaos.harness import SUMMARIES, Lab, TaggedGroup, kill_tagged, new_tag
from tests.docker.conftest import docker_engine, run_label

__all__ = ["docker_engine", "lab", "pytest_terminal_summary", "run_label"]


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """One line per schedule run, pass or fail (the full summaries: ``-s``, or a failure)."""
    if SUMMARIES:
        terminalreporter.section("chaos schedules")
        for line in SUMMARIES:
            terminalreporter.write_line(line)


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    group = TaggedGroup(tmp_path, new_tag())
    try:
        yield Lab(group, tmp_path)
    finally:
        # Whatever the test left: every process carrying its tag (lb, workers, backends, the
        # scaler and its members), then reap what the group started.
        kill_tagged(group.tag)
        group.close()

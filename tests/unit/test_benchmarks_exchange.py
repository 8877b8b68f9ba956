"""The in-process exchange benchmark runs whole exchanges through the real L7 adapters."""

from __future__ import annotations

import pytest

from benchmarks.exchange import main, measure


async def test_exchanges_complete_and_are_timed() -> None:
    # measure() raises unless every exchange reached a 200 through routing, balancing,
    # the upstream pool and both parsers.
    request_us, response_us = await measure(repeats=2, batch=50)
    assert request_us > 0 and response_us > 0


def test_the_command_prints_its_figure(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--repeats", "1", "--batch", "20"]) == 0
    assert "one exchange" in capsys.readouterr().out

"""Scale from zero and back, and panic mode, with real processes: lb (which holds requests while
a pool has no eligible backend, and publishes the pool's demand), lb-scaler with the process
provider, and demo backends started by the scaler.

Every request is one attempt on a new connection (no client retry): a request held by lb while
the first member starts must get its 200. The scaler's decisions are read from its JSON log.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from tests.helpers import Proc, http_get
from tests.integration.test_scaler import (
    MARGIN,
    Load,
    Scaled,
    config,
    drive,
    log_events,
    scaled,  # noqa: F401 (the fixture)
    up,
    wait_for,
)

# The demand API, not the interval, must wake the scaler: a long interval shows it.
INTERVAL = 4.0
IDLE = 3.0  # scale_to_zero_after


# The [[scalers]] settings of a pool that goes to zero (the Docker test uses them too).
ZERO: dict[str, Any] = {
    "min": 0,
    "max": 3,
    "target": 10,
    "interval": f"{INTERVAL}s",
    "scale_to_zero_after": f"{IDLE}s",
    "scale_down_stabilization": "0s",
}


def with_hold(cfg: dict[str, Any]) -> dict[str, Any]:
    """Requests wait up to 20 s for the first member (lb's default for such a pool is 30 s)."""
    cfg["pools"]["web"]["hold_timeout"] = "20s"
    return cfg


def decisions(scaler: Proc) -> list[dict[str, Any]]:
    return [e for e in log_events(scaler) if e.get("event") == "scaler_decision"]


def scale_ups(scaler: Proc, since: float) -> list[dict[str, Any]]:
    return [e for e in decisions(scaler) if e["time"] >= since and e["action"] == "scale_up"]


def at_zero(s: Scaled) -> bool:
    return s.backends() == [] and s.recorded() == []


def test_the_first_request_at_zero_members_is_held_and_served_then_the_pool_idles_to_zero(
    scaled: Scaled,  # noqa: F811 (the fixture)
) -> None:
    scaled.start(with_hold(config(**ZERO)))
    scaler = scaled.scaler()
    wait_for(lambda: decisions(scaler), 10, "the scaler's first decision", scaler)
    assert decisions(scaler)[0]["msg"] == "web: hold at 0: demand (in flight + queued + held) is 0"
    statuses: list[int] = []
    for cold_start in (1, 2):
        assert at_zero(scaled), f"cold start {cold_start}: the pool has members"
        sent = time.time() - 0.005  # log times are rounded to the millisecond
        # One attempt: lb holds it until the member the scaler starts passes its first check.
        status, headers, _ = http_get(scaled.port, "/", timeout=20)
        served = time.time()
        statuses.append(status)
        assert status == 200, f"cold start {cold_start}: {status}"
        assert headers["x-backend"].startswith("web-")
        ups = scale_ups(scaler, sent)
        assert ups, f"cold start {cold_start}: no scale-up decision"
        assert ups[0]["msg"] == (
            "web: scale up 0 -> 1: scale from zero: demand (in flight + queued + held) 1 / "
            "target 10.0, at once"
        )
        # Woken by lb's demand (not by the interval, 4 s), then decided.
        woken = [
            e
            for e in log_events(scaler)
            if e.get("event") == "scaler_woken" and sent <= e["time"] <= ups[0]["time"]
        ]
        assert woken and (woken[0]["cause"], woken[0]["demand"]) == ("no_eligible", 1)
        print(f"cold start {cold_start}: {served - sent:.2f}s to the response")
        # A few requests while it is warm: served by the member, never refused.
        for _ in range(5):
            status, _, _ = http_get(scaled.port, "/", timeout=10)
            statuses.append(status)
            assert status == 200
        # No demand for scale_to_zero_after: the member is drained, stopped and deregistered.
        went = wait_for(
            lambda: at_zero(scaled), IDLE + 2 * INTERVAL + 5 * MARGIN, "back at 0 members", scaler
        )
        assert went
        downs = [e for e in decisions(scaler) if e["time"] >= sent and e["desired"] == 0]
        assert downs and downs[0]["msg"].startswith(
            "web: scale down 1 -> 0: demand (in flight + queued + held) has been 0 for"
        )
    assert statuses == [200] * 12


def test_a_step_from_1_to_40_in_flight_panics_to_4_members_in_one_decision(
    scaled: Scaled,  # noqa: F811 (the fixture)
) -> None:
    """The issue's acceptance: min 1, max 5, target 10, and max_add = 1 (the HPA alone adds
    one member per period). 40 clients, each with one slow request in flight at a time."""
    scaled.start(
        config(
            min=1,
            max=5,
            target=10,
            max_add=1,
            period="60s",
            interval=f"{INTERVAL}s",
            scale_down_stabilization="30s",
        )
    )
    scaler = scaled.scaler()
    wait_for(lambda: [b for b in scaled.backends() if up(b)], 15, "the min member up", scaler)
    load = Load()

    async def scenario() -> float:
        stop_light = False
        light = asyncio.create_task(
            drive(scaled.port, load, 1, lambda: stop_light, path="/sleep?ms=200")
        )
        await asyncio.sleep(2 * INTERVAL)  # a steady 1 in flight, seen by the scaler
        step = time.time()
        end = time.monotonic() + 8
        await drive(scaled.port, load, 39, lambda: time.monotonic() > end, path="/sleep?ms=500")
        stop_light = True
        await light
        return step

    step = asyncio.run(scenario())
    ups = scale_ups(scaler, step)
    story = "\n".join(f"{e['time'] - step:+.2f}s {e['msg']}" for e in decisions(scaler))
    assert ups, story
    first = ups[0]
    assert (first["current"], first["panic"]) == (1, True), story
    assert first["desired"] >= 4, story
    assert "panic" in first["msg"], story
    assert load.errors == [], load.errors[:5]
    assert {status for _, _, status, _ in load.results} == {200}
    print(f"\n{story}")

"""``peak_ewma``: the estimate (peaks, time-weighted average, decay to the floor), the score
(estimate x (in-flight + 1) / weight), recovery of a backend that was slow, and the hook as the
pool and the config wire it. Plain values, a seeded RNG and times given by the test."""

from __future__ import annotations

import math
import random
from typing import Any

import pytest

from lb.balancing import (
    PeakEwma,
    StrategyOptions,
    create_strategy,
    tracks_latency,
    tracks_load,
)
from lb.config import ConfigError, parse_config
from lb.model import Backend, HealthState
from lb.proxy.pool import PoolRuntime, strategy_options
from lb.wire import BackendEntry

MS = 0.001


def ewma(seed: int = 1, **options: float) -> PeakEwma:
    return PeakEwma(StrategyOptions(**options), rng=random.Random(seed).random)


def backends(n: int, **kw: Any) -> list[Backend]:
    return [Backend(f"127.0.0.1:{9000 + i}", **kw) for i in range(n)]


def config(**pool: Any) -> Any:
    return parse_config(
        {
            "listeners": [{"name": "l", "bind": "127.0.0.1:1", "pool": "p"}],
            "pools": {"p": {"strategy": "peak_ewma", **pool}},
        }
    ).pools["p"]


# -- the estimate -------------------------------------------------------------------------------


def test_no_sample_reads_initial_rtt_when_idle_and_the_penalty_with_a_request_in_flight() -> None:
    s = ewma(ewma_initial_rtt=5 * MS, ewma_penalty=2.0)
    (b,) = bs = backends(1)
    s.update(bs)
    assert s.estimate(b) == 5 * MS
    b.active = 1
    assert s.estimate(b) == 2.0
    assert s.score(b) == 2.0 * 2  # estimate x (active + 1)


def test_a_peak_is_taken_at_once_and_a_lower_sample_is_blended_by_the_time_since() -> None:
    s = ewma(ewma_decay=10.0, ewma_floor=0.0)
    (b,) = bs = backends(1)
    s.update(bs)
    s.on_latency(b, 5 * MS, 100.0)
    assert s.estimate(b) == pytest.approx(5 * MS)
    s.on_latency(b, 50 * MS, 100.0)  # a peak: no averaging
    assert s.estimate(b) == pytest.approx(50 * MS)
    s.on_latency(b, 10 * MS, 110.0)  # one decay later: w = 1/e
    w = math.exp(-1)
    assert s.estimate(b) == pytest.approx(50 * MS * w + 10 * MS * (1 - w))


def test_many_fast_samples_forget_a_peak_at_the_pace_of_time_not_of_their_count() -> None:
    slow_rate, fast_rate = ewma(ewma_floor=0.0), ewma(ewma_floor=0.0)
    for s, per_second in ((slow_rate, 10), (fast_rate, 1000)):
        (b,) = bs = backends(1)
        s.update(bs)
        s.on_latency(b, 100 * MS, 0.0)
        for k in range(1, 5 * per_second + 1):
            s.on_latency(b, 1 * MS, k / per_second)
    a = slow_rate.estimate(slow_rate._backends[0])
    b_ = fast_rate.estimate(fast_rate._backends[0])
    assert a is not None and b_ is not None
    expected = 1 * MS + 99 * MS * math.exp(-0.5)  # 5 s at decay 10 s
    assert a == pytest.approx(expected, rel=1e-6)
    assert b_ == pytest.approx(expected, rel=1e-6)


def test_without_samples_the_estimate_decays_to_the_floor_and_stops_there() -> None:
    s = ewma(ewma_decay=10.0, ewma_floor=1 * MS)
    slow, fast = bs = backends(2)
    s.update(bs)
    s.on_latency(slow, 20 * MS, 0.0)
    s.on_latency(fast, 0.2 * MS, 1.0)  # the pool's time is now 1 s
    assert s.estimate(fast) == 1 * MS  # below the floor reads as the floor
    assert s.estimate(slow) == pytest.approx(20 * MS * math.exp(-0.1))
    # decay x ln(cost / floor) after its last sample, the slow one reads the floor.
    at_floor = 10.0 * math.log(20)
    s.on_latency(fast, 0.2 * MS, at_floor - 0.5)
    assert s.estimate(slow) > 1 * MS
    s.on_latency(fast, 0.2 * MS, at_floor + 0.01)
    assert s.estimate(slow) == 1 * MS
    s.on_latency(fast, 0.2 * MS, 1000.0)
    assert s.estimate(slow) == 1 * MS


def test_a_sample_for_a_backend_it_does_not_hold_is_ignored() -> None:
    s = ewma()
    a, b = backends(2)
    s.update([a])
    s.on_latency(b, 1.0, 5.0)
    assert s.estimate(b) is None and s.score(b) is None
    assert s.estimate(a) == 1 * MS


# -- the score and the pick ---------------------------------------------------------------------


def test_pick_keeps_the_lower_latency_times_in_flight() -> None:
    s = ewma(ewma_floor=1 * MS)
    slow, fast = bs = backends(2)
    s.update(bs)
    s.on_latency(slow, 20 * MS, 10.0)
    s.on_latency(fast, 2 * MS, 10.0)
    # Two backends: every pick compares both.
    assert {s.pick(None) for _ in range(20)} == {fast}
    fast.active = 9  # 2 ms x 10 = 20 ms x 1: a tie, equal weights: the first sampled
    assert {s.pick(None) for _ in range(50)} == {slow, fast}
    fast.active = 10  # 2 ms x 11 > 20 ms x 1
    assert {s.pick(None) for _ in range(20)} == {slow}
    slow.active = 1  # 20 ms x 2 > 2 ms x 11
    assert {s.pick(None) for _ in range(20)} == {fast}


def test_weights_divide_the_score_and_a_tie_goes_to_the_heavier() -> None:
    s = ewma()
    light = Backend("127.0.0.1:9001", 1)
    heavy = Backend("127.0.0.1:9002", 2)
    s.update([light, heavy])
    s.on_latency(light, 1 * MS, 1.0)
    s.on_latency(heavy, 1 * MS, 1.0)
    heavy.active = 1  # 1 ms x 2 / 2 == 1 ms x 1 / 1
    assert s.score(heavy) == s.score(light)
    assert {s.pick(None) for _ in range(30)} == {heavy}
    heavy.active = 2
    assert {s.pick(None) for _ in range(30)} == {light}


def test_pick_samples_two_distinct_backends_uniformly() -> None:
    s = ewma(seed=7)
    bs = backends(4)
    s.update(bs)
    counts = dict.fromkeys(bs, 0)
    for _ in range(4000):
        b = s.pick(None)
        assert b is not None
        counts[b] += 1
    # All idle at the same estimate: ties go to the first sampled, uniform over the four.
    assert all(800 < c < 1200 for c in counts.values()), counts


def test_empty_and_single_pools() -> None:
    s = ewma()
    assert s.pick(None) is None
    (b,) = bs = backends(1)
    s.update(bs)
    assert s.pick(None) is b


# -- membership ---------------------------------------------------------------------------------


def test_update_keeps_the_estimates_of_backends_that_stay_and_forgets_those_that_leave() -> None:
    s = ewma()
    a, b, c = bs = backends(3)
    s.update(bs)
    s.on_latency(a, 30 * MS, 1.0)
    s.on_latency(b, 40 * MS, 1.0)
    b.health = HealthState.DOWN
    s.update(bs)
    assert s.estimate(a) == pytest.approx(30 * MS)  # kept
    assert s.estimate(b) is None  # not eligible
    b.health = HealthState.UP
    s.update(bs)
    assert s.estimate(b) == 1 * MS  # back: no sample yet, initial_rtt
    a.effective_weight = 0.5  # slow start steps keep the estimate
    s.update(bs)
    assert s.estimate(a) == pytest.approx(30 * MS)
    replaced = Backend("127.0.0.1:9100", id=a.id)  # a new address: a new server
    s.update([replaced, b, c])
    assert s.estimate(replaced) == 1 * MS
    assert s.estimate(a) is None


# -- recovery, in a simulated pool --------------------------------------------------------------


def simulate(
    s: PeakEwma, bs: list[Backend], latency: dict[Backend, float], seconds: float, t: float
) -> tuple[dict[Backend, int], float]:
    """Closed-loop traffic, 8 requests in flight, 1 ms apart: each answer comes back after its
    backend's latency. Returns the picks per backend and the time at the end."""
    picks = dict.fromkeys(bs, 0)
    in_flight: list[tuple[float, Backend, float]] = []
    end = t + seconds
    while t < end:
        while len(in_flight) < 8:
            b = s.pick(None)
            assert b is not None
            b.active += 1
            picks[b] += 1
            in_flight.append((t + latency[b], b, t))
        in_flight.sort(key=lambda x: x[0])
        done, b, sent = in_flight.pop(0)
        t = max(t + 0.001, done)
        b.active -= 1
        s.on_latency(b, done - sent, t)
    for _, b, _ in in_flight:
        b.active -= 1
    return picks, t


def test_a_slow_backend_gets_few_requests_then_its_share_again_once_it_recovers() -> None:
    s = ewma(seed=3, ewma_decay=1.0)
    bs = backends(4)
    slow = bs[0]
    s.update(bs)
    latency = dict.fromkeys(bs, 1 * MS)
    latency[slow] = 50 * MS
    picks, t = simulate(s, bs, latency, 20.0, 0.0)
    total = sum(picks.values())
    assert picks[slow] / total < 0.01, picks  # probes only
    assert picks[slow] >= 3  # ... but probes: the floor brings it back every few seconds
    latency[slow] = 1 * MS  # it recovers
    # Within decay x ln(50 ms / 1 ms) ~ 4 s its estimate reaches the floor, a probe answers
    # fast, and it takes its share again.
    _, t = simulate(s, bs, latency, 5.0, t)
    picks, t = simulate(s, bs, latency, 5.0, t)
    total = sum(picks.values())
    assert picks[slow] / total > 0.15, picks


def test_a_slow_backend_that_stays_slow_is_probed_but_not_given_traffic_back() -> None:
    s = ewma(seed=5, ewma_decay=1.0)
    bs = backends(4)
    s.update(bs)
    latency = dict.fromkeys(bs, 1 * MS)
    latency[bs[1]] = 50 * MS
    simulate(s, bs, latency, 10.0, 0.0)
    picks, _ = simulate(s, bs, latency, 20.0, 10.0)
    assert 0 < picks[bs[1]] / sum(picks.values()) < 0.01, picks


# -- the hook, the pool and the config ----------------------------------------------------------


def test_which_strategies_track_latency() -> None:
    assert tracks_latency(create_strategy("peak_ewma", StrategyOptions()))
    assert not tracks_load(create_strategy("peak_ewma", StrategyOptions()))
    for name in ("round_robin", "weighted", "least_conn", "consistent_hash", "random_two"):
        assert not tracks_latency(create_strategy(name, StrategyOptions()))


def test_a_strategy_that_claims_the_hook_it_lacks_is_refused() -> None:
    class Liar:
        tracks_latency = True

        def update(self, backends: list[Backend]) -> None: ...

        def pick(self, key: bytes | None) -> Backend | None: ...

    with pytest.raises(TypeError, match="on_latency"):
        tracks_latency(Liar())


def test_the_pool_turns_the_hook_on_and_off_with_the_strategy() -> None:
    pool = PoolRuntime("p", config(strategy="round_robin"))
    pool.apply_snapshot([BackendEntry("b0", "127.0.0.1:9000", 1, 1.0)])
    assert not pool.tracks_latency
    pool.reconfigure(config(peak_ewma={"decay": "2s"}))
    assert pool.tracks_latency
    assert isinstance(pool.strategy, PeakEwma)
    assert pool.strategy.pick(None) is pool.backends["b0"]
    kept = pool.strategy
    pool.reconfigure(config(peak_ewma={"decay": "2s"}, retries=3))  # not a strategy setting
    assert pool.strategy is kept
    pool.reconfigure(config(peak_ewma={"decay": "3s"}, retries=3))  # a knob: a new strategy
    assert pool.strategy is not kept and pool.tracks_latency
    pool.reconfigure(config(strategy="least_conn"))
    assert not pool.tracks_latency


def test_config_knobs_reach_the_strategy() -> None:
    options = strategy_options(
        config(peak_ewma={"decay": "5s", "floor": "2ms", "initial_rtt": "30ms", "penalty": "3s"})
    )
    assert (options.ewma_decay, options.ewma_floor) == (5.0, 0.002)
    assert (options.ewma_initial_rtt, options.ewma_penalty) == (0.03, 3.0)
    defaults = strategy_options(config())
    assert (defaults.ewma_decay, defaults.ewma_floor) == (10.0, 0.001)
    assert (defaults.ewma_initial_rtt, defaults.ewma_penalty) == (0.001, 1.0)


@pytest.mark.parametrize(
    ("pool", "field"),
    [
        ({"peak_ewma": {"decay": "0s"}}, "pools.p.peak_ewma.decay"),
        ({"peak_ewma": {"floor": "-1ms"}}, "pools.p.peak_ewma.floor"),
        ({"peak_ewma": {"penalty": "soon"}}, "pools.p.peak_ewma.penalty"),
        ({"peak_ewma": {"decya": "1s"}}, "pools.p.peak_ewma.decya"),
        ({"strategy": "least_conn", "peak_ewma": {}}, "pools.p.peak_ewma"),
    ],
)
def test_bad_knobs_are_refused_naming_the_field(pool: dict[str, Any], field: str) -> None:
    with pytest.raises((ConfigError, ValueError)) as info:
        config(**pool)
    assert field in str(info.value)


def test_the_constructor_refuses_values_no_config_could_give() -> None:
    with pytest.raises(ValueError, match="decay"):
        PeakEwma(StrategyOptions(ewma_decay=0.0))
    with pytest.raises(ValueError, match="ewma_floor"):
        PeakEwma(StrategyOptions(ewma_floor=-1.0))


# -- more than two choices ----------------------------------------------------------------------


def test_three_choices_out_of_four_never_send_to_a_slow_pair() -> None:
    two, three = ewma(seed=11), ewma(seed=11, ewma_choices=3)
    for s in (two, three):
        bs = backends(4)
        s.update(bs)
        for b in bs:
            s.on_latency(b, (50 if b in bs[:2] else 1) * MS, 1.0)
        picks = [s.pick(None) for _ in range(3000)]
        slow = sum(1 for b in picks if b in bs[:2])
        if s is two:
            # Both candidates slow in 1 of 6 draws: one of them gets the request.
            assert 380 < slow < 620, slow
        else:
            assert slow == 0


def test_choices_at_least_the_pool_compare_every_backend_and_sample_uniformly() -> None:
    s = ewma(seed=2, ewma_choices=5)
    bs = backends(3)
    s.update(bs)
    for b, ms in zip(bs, (3, 1, 2), strict=True):
        s.on_latency(b, ms * MS, 1.0)
    s2 = ewma(seed=2, ewma_choices=3, ewma_floor=0.0)
    s2.update(bs)
    for b, ms in zip(bs, (3, 1, 2), strict=True):
        s2.on_latency(b, ms * MS, 1.0)
    assert {s2.pick(None) for _ in range(50)} == {bs[1]}
    bs[1].active = 2  # 1 ms x 3 > 2 ms x 1
    assert {s2.pick(None) for _ in range(50)} == {bs[2]}
    # Idle and equal (all at the floor): ties go to the first drawn, uniform over the pool.
    four = ewma(seed=9, ewma_choices=3)
    pool = backends(4)
    four.update(pool)
    counts = dict.fromkeys(pool, 0)
    for _ in range(4000):
        b = four.pick(None)
        assert b is not None
        counts[b] += 1
    assert all(800 < c < 1200 for c in counts.values()), counts
    assert s.pick(None) in bs


def test_choices_below_two_are_refused() -> None:
    with pytest.raises(ValueError, match="ewma_choices"):
        PeakEwma(StrategyOptions(ewma_choices=1))
    with pytest.raises(ConfigError, match=r"pools\.p\.peak_ewma\.choices"):
        config(peak_ewma={"choices": 1})
    assert strategy_options(config(peak_ewma={"choices": 3})).ewma_choices == 3

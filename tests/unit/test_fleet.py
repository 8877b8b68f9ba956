"""Several lb instances for one pool: the config of ``lbs``, tokens, the merge of the
instances' figures, the removal rule with an instance that does not answer, the resync, and
how status and metrics report each instance.

The lb that answers is the controller tests' in-memory lb; the one that does not is a real
``ControlClient`` on a socket path where nothing listens (a real ``Unreachable``)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, cast

import orjson
import pytest
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import CollectorRegistry

from lb.config import ConfigError, load_config
from lb.control.client import ControlClient
from lb.control.models import BackendStats, Percentiles, PoolStats
from scaler.config import scalers_of
from scaler.controller import PoolScaler
from scaler.fleet import LOCAL, FleetError, Instance, merge_stats, open_instances
from scaler.metrics import ScalerCollector, parse_bind
from scaler.status import format_status
from tests.unit.test_scaler_controller import FakeLB, FakeProvider, World, scaler_config, view

BASE = """
[lb]
control_socket = "run/lb.sock"
[[listeners]]
name = "web"
bind = "127.0.0.1:18080"
pool = "web"
[pools.web]
[[scalers]]
pool = "web"
max = 3
target = 2
{extra}
[scalers.process]
command = "/bin/true {{port}}"
"""


def load(tmp_path: Path, extra: str) -> Any:
    path = tmp_path / "config.toml"
    path.write_text(BASE.format(extra=extra))
    return load_config(path)


@pytest.mark.parametrize(
    ("extra", "field", "says"),
    [
        ('lbs = [{ url = "127.0.0.1:9901", token_file = "t" }]', "lbs[0].url", "http://HOST:PORT"),
        ('lbs = [{ url = "http://127.0.0.1/x", token_env = "T" }]', "lbs[0].url", "no path"),
        (
            'lbs = [{ url = "http://u:p@127.0.0.1:1", token_env = "T" }]',
            "lbs[0].url",
            "credentials",
        ),
        ('lbs = [{ url = "http://127.0.0.1:9901" }]', "lbs[0].token_file", "exactly one"),
        (
            'lbs = [{ url = "http://127.0.0.1:9901", token_file = "t", token_env = "T" }]',
            "lbs[0].token_file",
            "exactly one",
        ),
        (
            'lbs = [{ url = "http://127.0.0.1:1", token_env = "1X" }]',
            "lbs[0].token_env",
            "variable",
        ),
        (
            'lbs = [{ url = "http://127.0.0.1:1", name = "local", token_env = "T" }]',
            "lbs[0].name",
            "control_socket",
        ),
        (
            'lbs = [{ url = "http://127.0.0.1:1", token_env = "T" },'
            ' { url = "http://127.0.0.1:1", token_env = "T" }]',
            "lbs[1].url",
            "lbs[0] has this url",
        ),
        (
            'lbs = [{ url = "http://127.0.0.1:1", name = "b", token_env = "T" },'
            ' { url = "http://127.0.0.1:2", name = "b", token_env = "T" }]',
            "lbs[1].name",
            "distinct",
        ),
        ("local_lb = false", "local_lb", "no lb to keep in step"),
        ('lbs = [{ url = "http://127.0.0.1:1", token_env = "T", port = 3 }]', "lbs[0].port", ""),
    ],
)
def test_bad_lbs_are_refused_naming_the_field(
    tmp_path: Path, extra: str, field: str, says: str
) -> None:
    with pytest.raises(ConfigError) as exc:
        load(tmp_path, extra)
    assert f"scalers[0].{field}" in str(exc.value)
    assert says in str(exc.value)


def test_local_lb_and_lbs_become_instances_with_their_tokens(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "b.token").write_text("sekrit-b\n")
    monkeypatch.setenv("LB_C_TOKEN", "sekrit-c")
    cfg = load(
        tmp_path,
        'lbs = [{ url = "http://127.0.0.1:9901/", name = "b", token_file = "b.token" },'
        ' { url = "http://127.0.0.1:9902", token_env = "LB_C_TOKEN" }]',
    )
    (sc,) = scalers_of(cfg)
    got = open_instances(sc, 0, tmp_path / "config.toml", tmp_path / "run" / "lb.sock")
    assert [(i.name, i.target) for i in got] == [
        (LOCAL, str(tmp_path / "run" / "lb.sock")),
        ("b", "http://127.0.0.1:9901"),
        ("127.0.0.1:9902", "http://127.0.0.1:9902"),
    ]
    assert got[1].client._headers == {"Authorization": "Bearer sekrit-b"}
    assert got[2].client._headers == {"Authorization": "Bearer sekrit-c"}
    # Nothing an operator sees carries a token.
    shown = orjson.dumps([i.status() for i in got]) + repr(got).encode()
    assert b"sekrit" not in shown


def test_a_token_that_cannot_be_had_names_the_field(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = load(
        tmp_path,
        'local_lb = false\nlbs = [{ url = "http://127.0.0.1:1", token_file = "none.token" },'
        ' { url = "http://127.0.0.1:2", token_env = "LB_NO_SUCH_TOKEN" }]',
    )
    (sc,) = scalers_of(cfg)
    with pytest.raises(FleetError, match=r"scalers\[0\]\.lbs\[0\]\.token_file: cannot read .*"):
        open_instances(sc, 0, tmp_path / "config.toml", tmp_path / "lb.sock")
    (tmp_path / "none.token").write_text("  \n")
    with pytest.raises(FleetError, match=r"scalers\[0\]\.lbs\[0\]\.token_file: .* is empty"):
        open_instances(sc, 0, tmp_path / "config.toml", tmp_path / "lb.sock")
    (tmp_path / "none.token").write_text("x")
    monkeypatch.delenv("LB_NO_SUCH_TOKEN", raising=False)
    with pytest.raises(FleetError, match=r"lbs\[1\]\.token_env: .*LB_NO_SUCH_TOKEN is unset"):
        open_instances(sc, 0, tmp_path / "config.toml", tmp_path / "lb.sock")


def stats(address: str, **kw: Any) -> BackendStats:
    doc: dict[str, Any] = {
        "address": address,
        "admin": "ready",
        "health": "up",
        "eligible": True,
        "weight": 1,
        "in_flight": 0,
        "connections": 0,
        "total": 0,
        "rate": 0.0,
        "errors": 0,
        "error_rate": 0.0,
        "latency_ms": None,
    }
    doc.update(kw)
    return BackendStats.model_validate(doc)


def pool_stats(*backends: BackendStats) -> PoolStats:
    return PoolStats(
        in_flight=sum(b.in_flight for b in backends),
        connections=0,
        total=0,
        rate=0.0,
        errors=0,
        error_rate=0.0,
        latency_ms=None,
        backends_total=len(backends),
        backends_eligible=sum(1 for b in backends if b.eligible),
        backends={b.address: b for b in backends},
    )


def p(p95: float) -> Percentiles:
    return Percentiles(p50=p95 / 2, p90=p95, p95=p95, p99=p95, samples=10)


def test_figures_are_summed_over_instances_drain_and_eligibility_from_any() -> None:
    a = pool_stats(
        stats("m1", in_flight=3, rate=10.0, latency_ms=p(20)),
        stats("m2", in_flight=1, health="checking", eligible=False),
        stats("m3", in_flight=0),
    )
    b = pool_stats(
        stats("m1", in_flight=2, rate=5.0, latency_ms=p(50)),
        stats("m2", in_flight=4),
        stats("m3", admin="drain", eligible=False),
    )
    merged, eligible, in_flight = merge_stats([a, b])
    assert (merged["m1"].in_flight, merged["m1"].rate) == (5, 15.0)
    assert merged["m1"].latency_ms is not None and merged["m1"].latency_ms.p95 == 50
    assert merged["m2"].eligible and merged["m2"].health == "up"  # up on b: in service
    assert merged["m3"].admin == "drain" and not merged["m3"].eligible  # drained on b
    assert (eligible, in_flight) == (2, 10)  # m1, m2
    assert merge_stats([]) == ({}, 0, None)


async def close(ps: PoolScaler, *more: ControlClient) -> None:
    for c in [*(i.client for i in ps.fleet.instances), *more]:
        if isinstance(c, ControlClient):
            await c.close()


def two_lbs(tmp_path: Path, w: World, **kw: Any) -> tuple[PoolScaler, FakeProvider, FakeLB]:
    provider, local = FakeProvider(w), FakeLB(w)
    away = ControlClient(tmp_path / "nothing-here.sock")
    ps = PoolScaler(
        scaler_config(**kw),
        provider,
        [Instance(LOCAL, cast(ControlClient, local)), Instance("b", away)],
        clock=time.monotonic,
    )
    return ps, provider, local


async def test_an_unreachable_lb_blocks_a_removal_only_until_drain_timeout_then_resyncs(
    tmp_path: Path,
) -> None:
    w = World()
    ps, provider, local = two_lbs(tmp_path, w, min=1, drain_timeout=0.6)
    keep, leaving = provider.add(1), provider.add(2)
    for m in (keep, leaving):
        local.backends_[m.address] = view(m.address)
    t0 = time.monotonic()
    await ps.tick()  # 2 idle members, min 1: the newest goes
    took = time.monotonic() - t0
    assert 0.6 <= took < 3, took
    assert provider.members == {keep.id: keep} and set(local.backends_) == {keep.address}
    kinds = [a["kind"] for a in ps.actions]
    assert "drain_unreachable" in kinds and kinds[-1] == "member_removed"
    st = ps.status()
    (b,) = [x for x in st["lbs"] if x["name"] == "b"]
    assert b["state"] == "unreachable" and "no control socket" in b["reason"]
    assert st["lb_unreachable"] is None  # the pool goes on with the lb that answers

    # b returns, as of before: it still lists the removed member, and lacks nothing else.
    again = FakeLB(w)
    for m in (keep, leaving):
        again.backends_[m.address] = view(m.address)
    first = ps.fleet.instances[1].client
    ps.fleet.instances[1].client = cast(ControlClient, again)
    await ps.tick()
    assert set(again.backends_) == {keep.address}
    (b,) = [x for x in ps.status()["lbs"] if x["name"] == "b"]
    assert b["state"] == "in step"
    # The first sync of b (it was never in step before): not counted as a resync.
    assert b["resyncs"] == 0

    # Now in step, b goes away and comes back without the member (a lost state file).
    second = ps.fleet.instances[1].client = ControlClient(tmp_path / "nothing-here.sock")
    await ps.tick()
    empty = FakeLB(w)
    ps.fleet.instances[1].client = cast(ControlClient, empty)
    await ps.tick()
    assert set(empty.backends_) == {keep.address}
    assert empty.backends_[keep.address].metadata["member"] == keep.id
    (b,) = [x for x in ps.status()["lbs"] if x["name"] == "b"]
    assert b["state"] == "in step" and b["resyncs"] == 1
    last = [a for a in ps.actions if a["kind"] == "lb_in_step"][-1]
    assert f"registered {keep.address}" in last["message"]
    assert "was unreachable" in last["message"]
    await close(ps, first, second)


async def test_with_no_lb_answering_nothing_is_stopped(tmp_path: Path) -> None:
    w = World()
    ps, provider, local = two_lbs(tmp_path, w, min=1, drain_timeout=0.3)
    keep, leaving = provider.add(1), provider.add(2)
    ps.removing.add(leaving.id)  # a removal under way (resumed)
    local.down = True
    await ps.tick()
    assert set(provider.members) == {keep.id, leaving.id}
    assert ps.status()["lb_unreachable"] is not None
    await close(ps)


def status_doc(ps: PoolScaler) -> dict[str, Any]:
    return {"pid": 1, "running": True, "pools": {"web": ps.status()}, "updated": time.time()}


async def test_status_and_metrics_report_each_instance(tmp_path: Path) -> None:
    w = World()
    ps, provider, local = two_lbs(tmp_path, w, min=1, scale_down_stabilization=60)
    m = provider.add(1)
    local.backends_[m.address] = view(m.address)
    await ps.tick()
    text = format_status(status_doc(ps), 1, "config.toml")
    assert "lb instances:" in text
    assert f"local ({local_target(ps)}): in step" in text
    assert "b (" in text and "UNREACHABLE since" in text and "no control socket" in text
    assert "(on local)" in text  # the member is registered on one of the two

    registry = CollectorRegistry(auto_describe=False)
    registry.register(ScalerCollector(lambda: [ps.status()]))
    out = generate_latest(registry).decode()
    assert 'lb_scaler_lb_reachable{lb="b",pool="web"} 0.0' in out
    assert 'lb_scaler_lb_reachable{lb="local",pool="web"} 1.0' in out
    assert 'lb_scaler_lb_in_step{lb="b",pool="web"} 0.0' in out
    assert 'lb_scaler_lb_in_step{lb="local",pool="web"} 1.0' in out
    assert 'lb_scaler_members{pool="web"} 1.0' in out
    assert 'lb_scaler_desired_members{pool="web"} 1.0' in out
    assert 'lb_scaler_lb_out_of_step_seconds{lb="local",pool="web"} 0.0' in out
    assert "lb_scaler_actions_total" in out
    await close(ps)


def local_target(ps: PoolScaler) -> str:
    return ps.fleet.instances[0].target


def test_metrics_address_is_checked() -> None:
    assert parse_bind("127.0.0.1:9950") == "127.0.0.1:9950"
    for bad in ("9950", "127.0.0.1:", "127.0.0.1:x", ":9950", "127.0.0.1:70000"):
        with pytest.raises(ValueError, match="HOST:PORT"):
            parse_bind(bad)

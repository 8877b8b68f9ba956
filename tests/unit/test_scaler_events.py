"""lb's store of the scaler's events (lb/control/events.py): bounded, ordered by seq, queried by
pool and since; strict request bodies; routes in the API and its OpenAPI description."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from lb.control.api import ROUTES
from lb.control.events import KEEP, EventLog, NewEvent, PostEvents
from lb.control.openapi import build


def event(i: int, kind: str = "decision") -> NewEvent:
    return NewEvent(time=1000.0 + i, kind=kind, message=f"m{i}", current=1, desired=2)


def test_the_log_keeps_the_last_events_in_order() -> None:
    log = EventLog(keep=5)
    assert log.add("web", "scaler", [event(i) for i in range(4)], now=1.0) == 4
    log.add("api", "scaler", [event(i) for i in range(4, 8)], now=2.0)
    assert log.seq == 8
    assert [e.seq for e in log.query(None, 0, 100)] == [4, 5, 6, 7, 8]  # the first 3 fell off
    assert [e.message for e in log.query("web", 0, 100)] == ["m3"]
    assert [e.seq for e in log.query(None, 6, 100)] == [7, 8]
    assert [e.seq for e in log.query(None, 0, 2)] == [7, 8]  # the newest
    e = log.query("api", 0, 1)[0]
    assert (e.pool, e.source, e.received, e.current, e.desired) == ("api", "scaler", 2.0, 1, 2)


def test_bodies_are_strict() -> None:
    ok = PostEvents.model_validate({"events": [{"time": 1, "kind": "decision", "message": "x"}]})
    assert ok.source == "scaler"
    bad = [
        {"events": []},
        {"events": [{"time": 1, "kind": "Decision!", "message": "x"}]},
        {"events": [{"time": "1", "kind": "decision", "message": "x"}]},
        {"events": [{"time": 1, "kind": "decision", "message": "x", "extra": 1}]},
        {"events": [{"time": 1, "kind": "decision", "message": "x", "data": {"k": [1]}}]},
        {"events": [{"time": 1, "kind": "decision", "message": "x"}] * 101},
    ]
    for body in bad:
        with pytest.raises(ValidationError):
            PostEvents.model_validate(body)
    assert KEEP >= 100


def test_routes_are_registered_and_described() -> None:
    paths = {(r.method, r.path) for r in ROUTES}
    assert ("POST", "/v1/pools/{pool}/events") in paths
    assert ("GET", "/v1/events") in paths
    doc = build(auth=True)
    post = doc["paths"]["/v1/pools/{pool}/events"]["post"]
    assert post["security"] == [{"bearer": []}]  # a write: the admin listener needs the token
    assert "security" not in doc["paths"]["/v1/events"]["get"]
    names = {p["name"] for p in doc["paths"]["/v1/events"]["get"]["parameters"]}
    assert names == {"pool", "since", "limit"}

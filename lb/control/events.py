"""Scaling events: the scaler posts its decisions and actions here; lb keeps the last ones.

``POST /v1/pools/{pool}/events`` stores a batch, ``GET /v1/events`` lists what is kept,
oldest first (the dashboard and ``lbctl`` read it). The log is in memory only, bounded
(``KEEP`` events over all pools), and lost on restart: the scaler's own log and
``lb-scaler status`` are the record; this is the live view next to lb's state.

This module holds the models and the log; the control service owns the one ``EventLog`` of an
lb (``ControlService.events``), its API serves the routes (``ControlApi.post_events`` and
``list_events`` in ``lb/control/api.py``) and ``lb/control/metrics.py`` reads the scaler's decisions
from it. It imports nothing of the control plane.
"""

from __future__ import annotations

from collections import deque
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, StringConstraints

KEEP = 500  # events kept over all pools

Kind = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,31}$", strict=True)]
Text = Annotated[str, StringConstraints(max_length=2000, strict=True)]
Short = Annotated[str, StringConstraints(min_length=1, max_length=64, strict=True)]
Scalar = StrictInt | StrictFloat | bool | Annotated[str, StringConstraints(max_length=256)] | None


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Response(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class NewEvent(_Request):
    time: StrictFloat | StrictInt = Field(description="when it happened (Unix time, seconds)")
    kind: Kind = Field(
        description="decision, scale_up, scale_down, registered, deregistered, died, error, ...",
        examples=["decision"],
    )
    message: Text = Field(description="for people, e.g. the decision's reason")
    current: StrictInt | None = Field(default=None, ge=0, description="members before")
    desired: StrictInt | None = Field(default=None, ge=0, description="members wanted")
    data: dict[Short, Scalar] = Field(default_factory=dict, max_length=32)


class PostEvents(_Request):
    source: Short = Field(default="scaler", description="who sends them")
    events: list[NewEvent] = Field(min_length=1, max_length=100)


class EventsQuery(_Request):
    pool: str | None = Field(default=None, description="only this pool's events")
    since: int = Field(default=0, ge=0, description="only events with a larger seq")
    limit: int = Field(default=100, ge=1, le=KEEP, description="at most this many (the newest)")


class EventView(_Response):
    seq: int = Field(description="increases by one per stored event")
    pool: str
    source: str
    received: float = Field(description="when lb stored it (Unix time)")
    time: float
    kind: str
    message: str
    current: int | None
    desired: int | None
    data: dict[str, Any]


class EventsResponse(_Response):
    events: list[EventView]
    last_seq: int = Field(description="the seq of the newest stored event (0: none yet)")


class PostEventsResult(_Response):
    stored: int
    last_seq: int


class EventLog:
    """The last ``KEEP`` events, with a sequence number each."""

    def __init__(self, keep: int = KEEP) -> None:
        self.events: deque[EventView] = deque(maxlen=keep)
        self.seq = 0

    def add(self, pool: str, source: str, batch: list[NewEvent], now: float) -> int:
        for e in batch:
            self.seq += 1
            self.events.append(
                EventView(seq=self.seq, pool=pool, source=source, received=now, **e.model_dump())
            )
        return len(batch)

    def query(self, pool: str | None, since: int, limit: int) -> list[EventView]:
        found = [e for e in self.events if e.seq > since and (pool is None or e.pool == pool)]
        return found[-limit:]

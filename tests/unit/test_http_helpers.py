"""Recording handlers for the sans-IO HTTP tests, a check that they behave, and
``python_only`` (the compiled scans switched off).

``RequestRecorder``/``ResponseRecorder`` turn parser callbacks into plain tuples, so a test reads
as a transcript: bytes in, events out. ``merged`` joins consecutive body events, because how a
body is cut into callbacks depends on how the input was cut, and nothing else may.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import lb.http.request
import lb.http.response
import lb.http.rewrite
from lb.http import RequestHead, RequestLimits, RequestParser, ResponseHead, ResponseParser

Event = tuple[object, ...]


@contextmanager
def python_only() -> Iterator[None]:
    """The compiled scans and head builder switched off: the pure-Python parsers alone."""
    saved = lb.http.request._SCAN, lb.http.response._SCAN, lb.http.rewrite._BUILD
    lb.http.request._SCAN = lb.http.response._SCAN = lb.http.rewrite._BUILD = None
    try:
        yield
    finally:
        lb.http.request._SCAN, lb.http.response._SCAN, lb.http.rewrite._BUILD = saved


class RequestRecorder:
    """Records request events; with ``auto_resume`` it plays a proxy that answers at once."""

    def __init__(self, *, auto_resume: bool = True) -> None:
        self.events: list[Event] = []
        self.heads: list[RequestHead] = []
        self.auto_resume = auto_resume
        self.parser: RequestParser | None = None

    def on_request_head(self, head: RequestHead) -> None:
        self.heads.append(head)
        self.events.append(("head", head.method, head.target, head.host))

    def on_request_body(self, data: bytes) -> None:
        assert data, "empty body callbacks are noise"
        self.events.append(("body", bytes(data)))

    def on_request_end(self) -> None:
        self.events.append(("end",))
        if self.auto_resume and self.parser is not None:
            self.parser.resume()

    def on_request_error(self, status: int, reason: str) -> None:
        self.events.append(("error", status, reason))


def request_parser(
    limits: RequestLimits | None = None, *, auto_resume: bool = True
) -> tuple[RequestParser, RequestRecorder]:
    rec = RequestRecorder(auto_resume=auto_resume)
    parser = RequestParser(rec) if limits is None else RequestParser(rec, limits)
    rec.parser = parser
    return parser, rec


def parse_requests(
    chunks: list[bytes], limits: RequestLimits | None = None, *, eof: bool = False
) -> list[Event]:
    parser, rec = request_parser(limits)
    for chunk in chunks:
        parser.feed(chunk)
    if eof:
        parser.feed_eof()
    return merged(rec.events)


def merged(events: list[Event]) -> list[Event]:
    out: list[Event] = []
    for event in events:
        if event[0] == "body" and out and out[-1][0] == "body":
            previous = out[-1][1]
            assert isinstance(previous, bytes) and isinstance(event[1], bytes)
            out[-1] = ("body", previous + event[1])
        else:
            out.append(event)
    return out


def first_error(events: list[Event]) -> tuple[int, str] | None:
    for event in events:
        if event[0] == "error":
            status, reason = event[1], event[2]
            assert isinstance(status, int) and isinstance(reason, str)
            return status, reason
    return None


class ResponseRecorder:
    def __init__(self) -> None:
        self.events: list[Event] = []
        self.heads: list[ResponseHead] = []

    def on_response_interim(self, head: ResponseHead) -> None:
        self.events.append(("interim", head.status))

    def on_response_head(self, head: ResponseHead) -> None:
        self.heads.append(head)
        self.events.append(("head", head.status))

    def on_response_body(self, data: bytes) -> None:
        assert data, "empty body callbacks are noise"
        self.events.append(("body", bytes(data)))

    def on_response_end(self, reusable: bool) -> None:
        self.events.append(("end", reusable))

    def on_response_whole(self, head: ResponseHead, body: bytes, reusable: bool) -> None:
        # Recorded as the three events it stands for: transcripts do not depend on the path.
        self.on_response_head(head)
        if body:
            self.on_response_body(body)
        self.on_response_end(reusable)

    def on_response_upgrade(self, data: bytes) -> None:
        self.events.append(("upgrade", bytes(data)))

    def on_response_error(self, reason: str) -> None:
        self.events.append(("error", reason))


def response_parser() -> tuple[ResponseParser, ResponseRecorder]:
    rec = ResponseRecorder()
    return ResponseParser(rec), rec


def test_merged_joins_only_adjacent_bodies() -> None:
    events: list[Event] = [("body", b"a"), ("body", b"b"), ("end",), ("body", b"c")]
    assert merged(events) == [("body", b"ab"), ("end",), ("body", b"c")]

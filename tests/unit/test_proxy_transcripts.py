"""The L7 proxy as transcripts: client sends X, the backend receives Y, the backend answers Z,
the client receives W, and nothing else happens (``tests/unit/proxy_playbook.py``).

These run the real client protocol, exchange, upstream protocol, upstream pool, context and
pool runtime (compiled where they were built, and as plain Python under
``LB_NO_EXTENSIONS=1``) on recording stand-in transports and a fake clock: retries, the
keep-alive race, the proxy's own 404/502/503/504, early answers, the 101 tunnel, pipelining,
flow control both ways, and that every path gives its backend back (``Backend.active``, and a
draining backend reported idle once). The end-to-end tests (``tests/integration``) cover the
same ground over real sockets.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.unit.proxy_playbook import (
    Accept,
    Advance,
    Close,
    Connect,
    Connected,
    ConnectionLost,
    DataReceived,
    EofReceived,
    FailureReported,
    IdleReported,
    PauseReading,
    PauseWriting,
    Playbook,
    Refused,
    ResumeReading,
    ResumeWriting,
    SetAdmin,
    SetHealth,
    SetProtocol,
    TranscriptMismatch,
    Write,
    WriteEof,
)

GET = b"GET /x HTTP/1.1\r\nHost: example.test\r\n\r\n"
# What lb adds to every request head it forwards (the client is 127.0.0.9).
FORWARDED = b"".join(
    [
        b"X-Forwarded-For: 127.0.0.9\r\n",
        b"X-Forwarded-Proto: http\r\n",
        b"X-Forwarded-Host: example.test\r\n",
    ]
)
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi"


def rid(n: int) -> bytes:
    """The n-th request ID the transcript saw (the playbook names them in order)."""
    return b"X-Request-ID: rid-%d\r\n" % n


def upstream_get(n: int, path: bytes = b"/x") -> bytes:
    """``GET path`` as the backend receives it: the client's head, then lb's own lines."""
    return b"GET " + path + b" HTTP/1.1\r\nHost: example.test\r\n" + FORWARDED + rid(n) + b"\r\n"


def ok_to_client(n: int) -> bytes:
    """:data:`OK` as the client receives it: the backend's head plus the request ID."""
    return b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n" + rid(n) + b"\r\nhi"


def error(status: str, text: str, retry_after: bool = False, close: bool = True) -> bytes:
    """lb's own error answer (``lb.http.error_response``), spelled out."""
    body = f"{status}: {text}\n".encode()
    return (
        b"HTTP/1.1 " + status.encode() + b"\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n"
        b"Cache-Control: no-cache\r\n"
        + (b"Connection: close\r\n" if close else b"")
        + (b"Retry-After: 1\r\n" if retry_after else b"")
        + b"\r\n"
        + body
    )


@pytest.fixture
def playbook() -> Iterator[Callable[..., Playbook]]:
    made: list[Playbook] = []

    def make(*args: Any, **kwargs: Any) -> Playbook:
        pb = Playbook(*args, **kwargs)
        made.append(pb)
        return pb

    yield make
    for pb in made:
        pb.close()


def start_get(pb: Playbook, client: str = "client", upstream: str = "a1", n: int = 1) -> None:
    """A client connects and sends ``GET /x``; lb connects to the backend and forwards it."""
    (
        pb
        >> Accept(client)
        >> DataReceived(client, GET)
        << PauseReading(client)  # until the backend is reached
        << Connect(upstream)
        >> Connected(upstream)
        << Write(upstream, upstream_get(n))
    )


# -- the playbook itself ---------------------------------------------------------------------


def test_a_transcript_that_leaves_out_an_output_fails(playbook: Callable[..., Playbook]) -> None:
    pb = playbook()
    pb >> Accept("client") >> DataReceived("client", GET) << PauseReading("client")
    with pytest.raises(
        TranscriptMismatch, match=r"not in the transcript.*\n.*Connect\(side='a1'\)"
    ):
        assert pb


def test_a_transcript_with_a_wrong_output_fails(playbook: Callable[..., Playbook]) -> None:
    pb = playbook()
    pb >> Accept("client") >> DataReceived("client", GET)
    with pytest.raises(TranscriptMismatch, match=r"expected << Connect"):
        pb << Connect("a1")


# -- the plain exchange ----------------------------------------------------------------------


def test_a_get_goes_to_a_new_upstream_connection_and_the_answer_back(
    playbook: Callable[..., Playbook],
) -> None:
    pb = playbook()
    assert (
        pb
        >> Accept("client")
        >> DataReceived("client", b"GET /x HTTP/1.1\r\nHost: example.test\r\n\r\n")
        << PauseReading("client")
        << Connect("a1")
    )
    assert pb.active() == {"a": 1}
    assert (
        pb
        >> Connected("a1")
        << Write(
            "a1",
            b"GET /x HTTP/1.1\r\n"
            b"Host: example.test\r\n"
            b"X-Forwarded-For: 127.0.0.9\r\n"
            b"X-Forwarded-Proto: http\r\n"
            b"X-Forwarded-Host: example.test\r\n"
            b"X-Request-ID: rid-1\r\n"
            b"\r\n",
        )
        >> DataReceived("a1", b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi")
        << Write("client", b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Request-ID: rid-1\r\n\r\nhi")
        << ResumeReading("client")  # keep-alive: ready for the next request
    )
    assert pb.active() == {"a": 0}
    assert pb.ctx.upstreams.idle_count == 1  # a1 went back to the pool
    # The client stays idle past keepalive_timeout (15 s; the sweep runs every second).
    assert pb >> Advance(15) >> Advance(1) << Close("client")
    assert pb.open_clients() == []
    # The pooled connection goes when upstream_idle_timeout (30 s) has passed.
    assert pb >> Advance(13)  # 29 s
    assert pb.ctx.upstreams.idle_count == 1
    assert pb >> Advance(1) << Close("a1")
    assert pb.ctx.upstreams.idle_count == 0


# -- retries -----------------------------------------------------------------------------------


def test_a_refused_connect_is_retried_on_the_next_backend(
    playbook: Callable[..., Playbook],
) -> None:
    pb = playbook({"a": "ready", "b": "ready"})
    assert (
        pb
        >> Accept("client")
        >> DataReceived("client", GET)
        << PauseReading("client")
        << Connect("a1")
        >> Refused("a1")
        << FailureReported("a", "connect")
        << PauseReading("client")
        << Connect("b1")
        >> Connected("b1")
        << Write("b1", upstream_get(1))  # the same head, the same request ID
        >> DataReceived("b1", OK)
        << Write("client", ok_to_client(1))
        << ResumeReading("client")
    )
    assert pb.active() == {"a": 0, "b": 0}
    assert (pb.ctx.retries, pb.backend("a").retries, pb.backend("a").connect_failures) == (1, 1, 1)


def test_when_every_connect_is_refused_the_client_gets_502_after_the_retries(
    playbook: Callable[..., Playbook],
) -> None:
    pb = playbook({"a": "ready", "b": "ready"}, pool={"retries": 2})
    assert (
        pb
        >> Accept("client")
        >> DataReceived("client", GET)
        << PauseReading("client")
        << Connect("a1")
        >> Refused("a1")
        << FailureReported("a", "connect")
        << PauseReading("client")
        << Connect("b1")
        >> Refused("b1")
        << FailureReported("b", "connect")
        << PauseReading("client")
        << Connect("a2")  # every backend was tried: the one tried longest ago again
        >> Refused("a2")
        << FailureReported("a", "connect")
        << Write("client", error("502 Bad Gateway", "backend connect failed"))
        << Close("client")
    )
    assert pb.active() == {"a": 0, "b": 0}
    assert pb.open_clients() == []
    assert pb.ctx.retries == 2
    assert (pb.backend("a").connect_failures, pb.backend("b").connect_failures) == (2, 1)
    [line] = pb.access_log()
    assert json.loads(line) | {"time": 0} == json.loads(line) | {
        "time": 0,
        "status": 502,
        "retries": 2,
        "backend": "127.0.0.1:8001",
    }


def test_a_connect_that_hangs_past_connect_timeout_is_retried(
    playbook: Callable[..., Playbook],
) -> None:
    pb = playbook({"a": "ready", "b": "ready"}, listener={"connect_timeout": 2})
    assert (
        pb
        >> Accept("client")
        >> DataReceived("client", GET)
        << PauseReading("client")
        << Connect("a1")
        >> Advance(1.9)  # not yet
        >> Advance(0.1)
        << FailureReported("a", "connect")
        << PauseReading("client")
        << Connect("b1")
        >> Connected("b1")
        << Write("b1", upstream_get(1))
    )
    assert pb.pending_connects() == []  # a1's attempt was given up
    assert (
        pb >> DataReceived("b1", OK) << Write("client", ok_to_client(1)) << ResumeReading("client")
    )
    assert pb.active() == {"a": 0, "b": 0}


def test_a_get_on_a_pooled_connection_that_closes_unanswered_is_retried(
    playbook: Callable[..., Playbook],
) -> None:
    """The keep-alive race: the backend closed an idle connection just as lb reused it."""
    pb = playbook()
    start_get(pb)
    assert (
        pb
        >> DataReceived("a1", OK)
        << Write("client", ok_to_client(1))
        << ResumeReading("client")
        # The second request goes out on the pooled connection at once.
        >> DataReceived("client", GET)
        << Write("a1", upstream_get(2))
        >> EofReceived("a1")  # the backend's FIN, no response byte
        << Close("a1")
        << FailureReported("a", "reset")
        << PauseReading("client")
        << Connect("a2")  # the only backend, on a new connection
        >> Connected("a2")
        << Write("a2", upstream_get(2))
        >> DataReceived("a2", OK)
        << Write("client", ok_to_client(2))
        << ResumeReading("client")
    )
    assert pb.active() == {"a": 0}
    assert pb.ctx.retries == 1


@pytest.mark.parametrize(
    ("method", "body"),
    [(b"POST", b"abc"), (b"PUT", b"abc"), (b"POST", b"")],
    ids=["POST with a body", "PUT with a body", "POST without a body"],
)
def test_a_post_or_a_request_with_a_body_on_a_pooled_connection_that_closes_is_not_retried(
    playbook: Callable[..., Playbook], method: bytes, body: bytes
) -> None:
    """The backend may have acted on it: a POST is not replayed, nor a request with a body
    (PUT is idempotent, but its body was streamed and is gone); the client gets 502."""
    pb = playbook()
    start_get(pb)
    head = b"%s /x HTTP/1.1\r\nHost: example.test\r\nContent-Length: %d\r\n\r\n" % (
        method,
        len(body),
    )
    (
        pb
        >> DataReceived("a1", OK)
        << Write("client", ok_to_client(1))
        << ResumeReading("client")
        >> DataReceived("client", head + body)
        << Write("a1", head[:-2] + FORWARDED + rid(2) + b"\r\n")
    )
    if body:
        pb << Write("a1", body)  # (a separate write: it came through the parser's body event)
    assert (
        pb
        >> EofReceived("a1")
        << Close("a1")
        << FailureReported("a", "reset")
        << Write(
            "client",
            error(
                "502 Bad Gateway", "the backend closed the connection or sent an invalid response"
            ),
        )
        << Close("client")
    )
    assert pb.active() == {"a": 0}
    assert pb.ctx.retries == 0


# -- the proxy's own answers -------------------------------------------------------------------


def test_an_invalid_response_is_answered_with_502(playbook: Callable[..., Playbook]) -> None:
    pb = playbook()
    start_get(pb)
    assert (
        pb
        >> DataReceived("a1", b"HTTP/1.1 2000 Huh\r\n\r\n")
        << Close("a1")  # never reused
        << FailureReported("a", "reset")
        << Write(
            "client",
            error(
                "502 Bad Gateway", "the backend closed the connection or sent an invalid response"
            ),
        )
        << Close("client")
    )
    assert pb.active() == {"a": 0}
    assert pb.ctx.upstreams.idle_count == 0


def test_with_no_eligible_backend_the_client_gets_503_with_retry_after(
    playbook: Callable[..., Playbook],
) -> None:
    pb = playbook({"a": "ready", "b": "ready"}, health="down")
    refused = error(
        "503 Service Unavailable", "no backend is available", retry_after=True, close=False
    )
    # The request was read whole: the connection stays usable for the next one.
    assert (
        pb
        >> Accept("client")
        >> DataReceived("client", GET)
        << Write("client", refused)
        << ResumeReading("client")
        >> DataReceived("client", GET)
        << Write("client", refused)
        << ResumeReading("client")
    )
    assert pb.active() == {"a": 0, "b": 0}
    assert pb.backend("a").total == pb.backend("b").total == 0


def test_a_backend_silent_past_response_timeout_gets_504(
    playbook: Callable[..., Playbook],
) -> None:
    pb = playbook(listener={"response_timeout": 5})
    start_get(pb)
    assert pb >> Advance(5)  # the sweep sees exactly 5 s: not over the limit yet
    assert pb.active() == {"a": 1}
    assert (
        pb
        >> Advance(1)
        << Close("a1")
        << FailureReported("a", "timeout")
        << Write("client", error("504 Gateway Timeout", "the backend did not answer in time"))
        << Close("client")
    )
    assert pb.active() == {"a": 0}
    assert pb.open_clients() == []


def test_a_request_no_route_matches_gets_404(playbook: Callable[..., Playbook]) -> None:
    pb = playbook(listener={"pool": None, "routes": [{"host": "api.test", "pool": "p"}]})
    assert (
        pb
        >> Accept("client")
        >> DataReceived("client", GET)  # Host: example.test
        << Write("client", error("404 Not Found", "no route matches this request"))
        << Close("client")
    )
    assert pb.active() == {"a": 0}


# -- early answers, upgrades, pipelining -------------------------------------------------------


def test_an_early_answer_drops_the_rest_of_the_body_and_closes_after_the_request(
    playbook: Callable[..., Playbook],
) -> None:
    pb = playbook()
    post = b"POST /up HTTP/1.1\r\nHost: example.test\r\nContent-Length: 10\r\n\r\n"
    assert (
        pb
        >> Accept("client")
        >> DataReceived("client", post + b"abcd")
        << PauseReading("client")  # connecting
        << PauseReading("client")  # body bytes wait with the head
        << Connect("a1")
        >> Connected("a1")
        << Write("a1", post[:-2] + FORWARDED + rid(1) + b"\r\nabcd")
        << ResumeReading("client")  # the rest of the body may come
        # The backend answers before it has read the whole body.
        >> DataReceived("a1", b"HTTP/1.1 403 Forbidden\r\nContent-Length: 5\r\n\r\nnope\n")
        << Write(  # the connection will close after the request: the client is told now
            "client",
            b"HTTP/1.1 403 Forbidden\r\nContent-Length: 5\r\nConnection: close\r\n"
            + rid(1)
            + b"\r\nnope\n",
        )
        << Close("a1")  # half a request went up it: not reusable
    )
    assert pb.active() == {"a": 0}
    assert pb.open_clients() == ["client"]  # still reading the request
    assert (
        pb
        >> DataReceived("client", b"efgh")  # dropped: nothing goes anywhere
        >> DataReceived("client", b"ij")  # the request ends: the connection is out of step
        << Close("client")
    )
    assert pb.open_clients() == []


def test_after_101_bytes_flow_both_ways_through_the_tunnel(
    playbook: Callable[..., Playbook],
) -> None:
    pb = playbook(listener={"idle_timeout": 60})
    upgrade = (
        b"GET /ws HTTP/1.1\r\nHost: example.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    )
    assert (
        pb
        >> Accept("client")
        >> DataReceived("client", upgrade + b"\r\n")
        << PauseReading("client")
        << Connect("a1")
        >> Connected("a1")
        << Write(
            "a1",
            b"GET /ws HTTP/1.1\r\nHost: example.test\r\nUpgrade: websocket\r\n"
            + FORWARDED
            + rid(1)
            + b"Connection: upgrade\r\n\r\n",
        )
        >> DataReceived(
            "a1",
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
            b"srv-hello",
        )
        << Write(
            "client",
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            + rid(1)
            + b"\r\n",
        )
        << Write("client", b"srv-hello")  # the first tunnel bytes, in the same buffer
        << SetProtocol("client", "_TunnelSide")
        << SetProtocol("a1", "_TunnelSide")
        << ResumeReading("client")
        << ResumeReading("a1")
    )
    assert pb.active() == {"a": 0}  # a tunnel is a connection, not a request in flight
    assert (
        pb
        >> DataReceived("client", b"ping")
        << Write("a1", b"ping")
        >> DataReceived("a1", b"pong")
        << Write("client", b"pong")
        >> PauseWriting("client")
        << PauseReading("a1")
        >> ResumeWriting("client")
        << ResumeReading("a1")
        >> EofReceived("client")  # half-close goes through
        << WriteEof("a1")
        >> DataReceived("a1", b"bye")
        << Write("client", b"bye")
        # Silent for idle_timeout twice over (checked every idle_timeout): the tunnel closes.
        >> Advance(60)
        >> Advance(60)
        << Close("client")
        << Close("a1")  # the client side went: its peer follows
        << Close("client")  # and the other way (harmless, close is idempotent)
    )
    assert pb.open_clients() == []


def test_pipelined_requests_are_answered_in_order_one_at_a_time(
    playbook: Callable[..., Playbook],
) -> None:
    pb = playbook()
    second = b"GET /y HTTP/1.1\r\nHost: example.test\r\n\r\n"
    assert (
        pb
        >> Accept("client")
        >> DataReceived("client", GET + second)  # both in one buffer
        << PauseReading("client")
        << Connect("a1")
        >> Connected("a1")
        << Write("a1", upstream_get(1))  # only the first
        >> DataReceived("a1", OK)
        << Write("client", ok_to_client(1))
        << ResumeReading("client")
        # Only now is the second one parsed, and it goes out on the same connection.
        << Write("a1", upstream_get(2, b"/y"))
        >> DataReceived("a1", OK)
        << Write("client", ok_to_client(2))
        << ResumeReading("client")
    )
    assert pb.active() == {"a": 0}
    assert pb.ctx.requests == 2


# -- flow control ------------------------------------------------------------------------------


def test_a_client_that_stops_reading_stalls_the_backend(
    playbook: Callable[..., Playbook],
) -> None:
    pb = playbook()
    start_get(pb)
    assert (
        pb
        >> DataReceived("a1", b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123")
        << Write("client", b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n" + rid(1) + b"\r\n0123")
        >> PauseWriting("client")
        << PauseReading("a1")
        >> ResumeWriting("client")
        << ResumeReading("a1")
        >> DataReceived("a1", b"45")
        << Write("client", b"45")
        # Paused again, and the last bytes (already on their way) end the response.
        >> PauseWriting("client")
        << PauseReading("a1")
        >> DataReceived("a1", b"6789")
        << Write("client", b"6789")
        << ResumeReading("a1")  # it goes back to the pool reading (it was paused for the client)
        # The client still does not read: its next request waits (else each pipelined
        # request would add a response to the buffer), and so does reading it.
        << PauseReading("client")
        >> ResumeWriting("client")
        << ResumeReading("client")
        >> DataReceived("client", GET)
        << Write("a1", upstream_get(2))
    )


def test_a_backend_that_stops_reading_stalls_the_client(
    playbook: Callable[..., Playbook],
) -> None:
    pb = playbook()
    post = b"POST /up HTTP/1.1\r\nHost: example.test\r\nContent-Length: 8\r\n\r\n"
    assert (
        pb
        >> Accept("client")
        >> DataReceived("client", post)
        << PauseReading("client")
        << Connect("a1")
        >> Connected("a1")
        << Write("a1", post[:-2] + FORWARDED + rid(1) + b"\r\n")
        << ResumeReading("client")
        >> DataReceived("client", b"abcd")
        << Write("a1", b"abcd")
        >> PauseWriting("a1")
        << PauseReading("client")
        >> ResumeWriting("a1")
        << ResumeReading("client")
        >> DataReceived("client", b"efgh")
        << Write("a1", b"efgh")
        >> DataReceived("a1", b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n")
        << Write("client", b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n" + rid(1) + b"\r\n")
        << ResumeReading("client")
    )
    assert pb.active() == {"a": 0}
    assert pb.ctx.upstreams.idle_count == 1


# -- giving backends back ----------------------------------------------------------------------


def test_a_draining_backend_is_reported_idle_once_when_its_last_request_ends(
    playbook: Callable[..., Playbook],
) -> None:
    pb = playbook()
    start_get(pb, "c1", "a1", 1)
    start_get(pb, "c2", "a2", 2)
    assert pb.active() == {"a": 2}
    assert pb >> SetAdmin("a", "drain")  # nothing idle to close, nothing reported
    assert (
        pb
        >> DataReceived("a1", OK)
        << Write("c1", ok_to_client(1))
        << Close("a1")  # a draining backend's connections are not pooled
        << ResumeReading("c1")
    )
    assert pb.active() == {"a": 1}
    assert (
        pb
        >> DataReceived("a2", OK)
        << Write("c2", ok_to_client(2))
        << Close("a2")
        << IdleReported("a")  # its last request here ended
        << ResumeReading("c2")
    )
    assert pb.active() == {"a": 0}
    # A new request is refused (nothing eligible) and does not count against it.
    assert (
        pb
        >> DataReceived("c1", GET)
        << Write(
            "c1",
            error(
                "503 Service Unavailable", "no backend is available", retry_after=True, close=False
            ),
        )
        << ResumeReading("c1")
    )
    assert pb.active() == {"a": 0}


def test_a_drain_closes_the_backends_idle_pooled_connections(
    playbook: Callable[..., Playbook],
) -> None:
    pb = playbook()
    start_get(pb)
    assert (
        pb >> DataReceived("a1", OK) << Write("client", ok_to_client(1)) << ResumeReading("client")
    )
    assert pb >> SetAdmin("a", "drain") << Close("a1")  # nothing in flight: no idle report
    assert pb.ctx.upstreams.idle_count == 0


def _response(pb: Playbook) -> None:
    assert (
        pb
        >> DataReceived("a1", OK)
        << Write("client", ok_to_client(1))
        << Close("a1")
        << IdleReported("a")
        << ResumeReading("client")
    )


def _invalid_response(pb: Playbook) -> None:
    assert (
        pb
        >> DataReceived("a1", b"NOT HTTP\r\n\r\n")
        << Close("a1")
        << FailureReported("a", "reset")
        << IdleReported("a")
        << Write(
            "client",
            error(
                "502 Bad Gateway", "the backend closed the connection or sent an invalid response"
            ),
        )
        << Close("client")
    )


def _backend_resets(pb: Playbook) -> None:
    # Unanswered GET: retried, but the draining backend is no longer eligible.
    assert (
        pb
        >> ConnectionLost("a1")
        << FailureReported("a", "reset")
        << IdleReported("a")
        << Write("client", error("502 Bad Gateway", "no backend could be reached"))
        << Close("client")
    )


def _timeout(pb: Playbook) -> None:
    assert (
        pb
        >> Advance(61)
        << Close("a1")
        << FailureReported("a", "timeout")
        << IdleReported("a")
        << Write("client", error("504 Gateway Timeout", "the backend did not answer in time"))
        << Close("client")
    )


def _client_goes(pb: Playbook) -> None:
    assert pb >> ConnectionLost("client") << Close("a1") << IdleReported("a")


def _upgrade(pb: Playbook) -> None:
    assert (
        pb
        >> DataReceived("a1", b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n")
        << Write("client", b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n" + rid(1) + b"\r\n")
        << IdleReported("a")  # the tunnel is not an exchange in flight
        << SetProtocol("client", "_TunnelSide")
        << SetProtocol("a1", "_TunnelSide")
        << ResumeReading("client")
        << ResumeReading("a1")
    )


ENDINGS_AFTER_THE_HEAD_WENT_UP = [
    _response,
    _invalid_response,
    _backend_resets,
    _timeout,
    _client_goes,
    _upgrade,
]


@pytest.mark.parametrize("ending", ENDINGS_AFTER_THE_HEAD_WENT_UP, ids=lambda f: f.__name__[1:])
def test_every_way_an_exchange_ends_gives_the_backend_back(
    playbook: Callable[..., Playbook], ending: Callable[[Playbook], None]
) -> None:
    """The request is in flight on a backend that starts draining; however the exchange ends,
    ``Backend.active`` returns to 0 and the backend is reported idle exactly once."""
    pb = playbook()
    if ending is _upgrade:
        first = b"GET /x HTTP/1.1\r\nHost: example.test\r\nUpgrade: x\r\n"
        head = first + b"Connection: upgrade\r\n\r\n"
        forwarded = first + FORWARDED + rid(1) + b"Connection: upgrade\r\n\r\n"
    else:
        head, forwarded = GET, upstream_get(1)
    assert (
        pb
        >> Accept("client")
        >> DataReceived("client", head)
        << PauseReading("client")
        << Connect("a1")
        >> Connected("a1")
        << Write("a1", forwarded)
    )
    assert pb >> SetAdmin("a", "drain")
    assert pb.active() == {"a": 1}
    ending(pb)
    assert pb.active() == {"a": 0}
    assert pb.backend("a").total == 1


@pytest.mark.parametrize("how", ["refused", "client goes"])
def test_a_request_that_never_reached_the_draining_backend_gives_it_back(
    playbook: Callable[..., Playbook], how: str
) -> None:
    pb = playbook()
    assert (
        pb
        >> Accept("client")
        >> DataReceived("client", GET)
        << PauseReading("client")
        << Connect("a1")
        >> SetAdmin("a", "drain")
    )
    if how == "refused":
        assert (
            pb
            >> Refused("a1")
            << FailureReported("a", "connect")
            << IdleReported("a")
            << Write("client", error("502 Bad Gateway", "no backend could be reached"))
            << Close("client")
        )
    else:
        assert pb >> ConnectionLost("client") << IdleReported("a")
        assert pb.pending_connects() == []  # the connect was called off
    assert pb.active() == {"a": 0}
    assert pb.open_clients() == []


# -- limits and the queue (max_conn, max_queue, queue_timeout, hold_timeout) -------------------


def busy(status: str = "no backend slot came free in time") -> bytes:
    """The 503 of a full queue or a wait that ran out: the connection stays usable."""
    return error("503 Service Unavailable", status, retry_after=True, close=False)


def test_at_max_conn_requests_wait_and_get_freed_slots_in_arrival_order(
    playbook: Callable[..., Playbook],
) -> None:
    pb = playbook(pool={"max_conn": 1})
    start_get(pb, "c1")
    assert pb >> Accept("c2") >> DataReceived("c2", GET)  # queued: nothing happens
    assert pb >> Accept("c3") >> DataReceived("c3", GET)
    assert pb.active() == {"a": 1} and pb.pool.waiting == 2
    # c1's answer frees the slot: the oldest waiter (c2) takes it, on the same connection.
    assert (
        pb
        >> DataReceived("a1", OK)
        << Write("c1", ok_to_client(1))
        << Write("a1", upstream_get(2))
        << ResumeReading("c1")
    )
    assert pb.active() == {"a": 1} and pb.pool.waiting == 1
    assert (
        pb
        >> DataReceived("a1", OK)
        << Write("c2", ok_to_client(2))
        << Write("a1", upstream_get(3))
        << ResumeReading("c2")
        >> DataReceived("a1", OK)
        << Write("c3", ok_to_client(3))
        << ResumeReading("c3")
    )
    assert pb.active() == {"a": 0} and pb.pool.waiting == 0
    assert pb.pool.waited == 2


def test_a_wait_past_queue_timeout_gets_503_and_the_connection_stays_usable(
    playbook: Callable[..., Playbook],
) -> None:
    pb = playbook(pool={"max_conn": 1, "queue_timeout": "2s"})
    start_get(pb, "c1")
    assert pb >> Accept("c2") >> DataReceived("c2", GET)
    assert pb >> Advance(1.9)
    assert pb >> Advance(0.2) << Write("c2", busy()) << ResumeReading("c2")
    assert pb.pool.waiting == 0 and pb.pool.queue_timeouts == 1
    # c2 asks again on the same connection; the slot is free by now.
    assert (
        pb
        >> DataReceived("a1", OK)
        << Write("c1", ok_to_client(1))
        << ResumeReading("c1")
        >> DataReceived("c2", GET)
        << Write("a1", upstream_get(2))  # (the 503 carried no request ID)
    )


def test_a_full_queue_answers_503_at_once(playbook: Callable[..., Playbook]) -> None:
    pb = playbook(pool={"max_conn": 1, "max_queue": 1})
    start_get(pb, "c1")
    assert pb >> Accept("c2") >> DataReceived("c2", GET)
    assert (
        pb
        >> Accept("c3")
        >> DataReceived("c3", GET)
        << Write("c3", busy("queue full"))
        << ResumeReading("c3")
    )
    assert pb.pool.queue_full == 1 and pb.pool.waiting == 1


def test_a_queued_client_that_leaves_is_out_of_the_queue_at_once(
    playbook: Callable[..., Playbook],
) -> None:
    pb = playbook(pool={"max_conn": 1})
    start_get(pb, "c1")
    assert pb >> Accept("c2") >> DataReceived("c2", GET)
    assert pb >> Accept("c3") >> DataReceived("c3", GET)
    assert pb >> ConnectionLost("c2")  # a reset
    assert pb.pool.waiting == 1
    assert pb >> EofReceived("c3") << Close("c3")  # a FIN: HAProxy's abortonclose
    assert pb.pool.waiting == 0 and pb.pool.demand == 1
    # The freed slot finds nobody waiting; nothing is sent for the clients that left.
    assert pb >> DataReceived("a1", OK) << Write("c1", ok_to_client(1)) << ResumeReading("c1")
    assert pb.active() == {"a": 0}


def test_with_hold_a_request_waits_for_a_backend_to_come_up(
    playbook: Callable[..., Playbook],
) -> None:
    pb = playbook({"a": "ready"}, health="down", pool={"hold_timeout": "30s"})
    assert pb >> Accept("c1") >> DataReceived("c1", GET)
    assert pb >> Accept("c2") >> DataReceived("c2", GET)
    assert pb.pool.held == 2
    assert pb >> Advance(5)  # nothing until a backend is eligible
    # It comes up: the held requests go out at once, oldest first (no timer involved).
    assert (
        pb
        >> SetHealth("a", "up")
        << PauseReading("c1")
        << PauseReading("c2")
        << Connect("a1")
        << Connect("a2")
        >> Connected("a1")
        << Write("a1", upstream_get(1))
        >> Connected("a2")
        << Write("a2", upstream_get(2))
    )
    assert pb.pool.held == 0 and pb.active() == {"a": 2}


def test_a_held_request_gets_503_after_hold_timeout(playbook: Callable[..., Playbook]) -> None:
    pb = playbook({"a": "ready"}, health="down", pool={"hold_timeout": "3s"})
    assert pb >> Accept("c1") >> DataReceived("c1", GET)
    assert (
        pb
        >> Advance(3.1)
        << Write("c1", busy("no backend became available in time"))
        << ResumeReading("c1")
    )
    assert pb.pool.hold_timeouts == 1 and pb.pool.waiting == 0

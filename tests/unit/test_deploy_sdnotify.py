"""lb/sdnotify.py's pure parts: the address in NOTIFY_SOCKET, the watchdog interval, the
message format; and that every call is a no-op without NOTIFY_SOCKET."""

from __future__ import annotations

import pytest

from lb.sdnotify import Notifier, message, notify_address, watchdog_interval


@pytest.mark.parametrize(
    ("value", "address"),
    [
        ("/run/systemd/notify", "/run/systemd/notify"),
        ("@abstract/name", b"\0abstract/name"),
        ("", None),
        ("relative/path", None),
        ("vsock:2:1234", None),
    ],
)
def test_notify_address(value: str, address: str | bytes | None) -> None:
    assert notify_address({"NOTIFY_SOCKET": value}) == address


def test_no_notify_socket_means_no_address() -> None:
    assert notify_address({}) is None


@pytest.mark.parametrize(
    ("env", "interval"),
    [
        ({"WATCHDOG_USEC": "30000000"}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "42"}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "43"}, None),  # another process's
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({}, None),
    ],
)
def test_watchdog_interval(env: dict[str, str], interval: float | None) -> None:
    assert watchdog_interval(env, 42) == interval


def test_message_is_key_value_lines_in_order() -> None:
    assert message(READY=1, STATUS="2 worker(s)") == b"READY=1\nSTATUS=2 worker(s)"


def test_without_notify_socket_nothing_is_sent() -> None:
    n = Notifier({})
    assert not n.enabled
    assert not n.ready("x") and not n.reloading() and not n.stopping()
    n.close()


def test_a_vanished_manager_is_not_an_error(tmp_path: object) -> None:
    n = Notifier({"NOTIFY_SOCKET": "/nonexistent/notify.sock"})
    assert n.enabled
    assert n.ready("x") is False  # logged once, never raised
    n.close()

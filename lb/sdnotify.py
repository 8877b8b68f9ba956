"""systemd's readiness protocol (``sd_notify``), with the standard library only.

Owns: the datagrams lb sends to the service manager over ``$NOTIFY_SOCKET`` when it runs
under ``Type=notify`` (deploy/systemd/lb.service):

* ``READY=1`` once every listener accepts (the supervisor sends it when every worker said it
  is ready, after the first health checks), and again when a reload is over;
* ``RELOADING=1`` (with ``MONOTONIC_USEC``, as systemd 253's ``Type=notify-reload`` wants it)
  when a reload that passed its checks starts to apply;
* ``STOPPING=1`` when lb starts to stop;
* ``WATCHDOG=1`` every half ``$WATCHDOG_USEC`` from the supervisor's event loop, when the unit
  sets ``WatchdogSec=`` (a loop stuck for longer gets lb restarted);
* ``STATUS=...``, a line for ``systemctl status``.

The protocol (sd_notify(3)): one datagram per message on the ``AF_UNIX``/``SOCK_DGRAM`` socket
named by ``$NOTIFY_SOCKET``, a path or, with a leading ``@``, an abstract name. Without that
variable every call is a no-op, so lb behaves the same outside systemd. ``$WATCHDOG_PID``, when
set, names the process the watchdog is meant for; another process sends no pings.

It takes ``$NOTIFY_SOCKET`` and the watchdog variables out of the environment when it reads
them, as ``sd_notify(unset_environment=1)`` does: the workers lb spawns are not the service.

Never does: raise into the caller because the service manager went away (a failed send is
logged once and dropped: readiness is advice to systemd, never a reason for lb to stop), or
block (the socket is non-blocking; a full queue drops the message).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Mapping

log = logging.getLogger("lb.sdnotify")


def notify_address(environ: Mapping[str, str]) -> str | bytes | None:
    """The address in ``$NOTIFY_SOCKET``: a path, the abstract name (``@name`` -> ``\\0name``),
    or None when it is unset, empty, or not a unix socket address (such as ``vsock:``)."""
    raw = environ.get("NOTIFY_SOCKET", "")
    if raw.startswith("@"):
        return b"\0" + raw[1:].encode()
    if raw.startswith("/"):
        return raw
    return None


def watchdog_interval(environ: Mapping[str, str], pid: int) -> float | None:
    """Seconds between ``WATCHDOG=1`` pings (half of ``$WATCHDOG_USEC``), or None when the
    watchdog is off or meant for another process (``$WATCHDOG_PID``)."""
    try:
        usec = int(environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    owner = environ.get("WATCHDOG_PID", "")
    if usec <= 0 or (owner and owner != str(pid)):
        return None
    return usec / 2e6


def message(**fields: str | int) -> bytes:
    """``KEY=value`` lines, in the order given: ``message(READY=1, STATUS="ok")``."""
    return "\n".join(f"{k}={v}" for k, v in fields.items()).encode()


class Notifier:
    """Sends lb's state changes to the service manager; every method is a no-op without
    ``$NOTIFY_SOCKET``."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self.address = notify_address(env)
        self.watchdog = watchdog_interval(env, os.getpid())
        if environ is None:
            # As sd_notify(unset_environment=1): the workers lb spawns are not the service.
            for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
                os.environ.pop(name, None)
        self._sock: socket.socket | None = None
        self._warned = False
        self._timer: asyncio.TimerHandle | None = None

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, payload: bytes) -> bool:
        """Send one message; False when there is nowhere to send it or the send failed."""
        if self.address is None:
            return False
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.setblocking(False)
            self._sock.sendto(payload, self.address)
        except OSError as exc:
            if not self._warned:
                self._warned = True
                log.warning(
                    "sd_notify to %r failed (%s); systemd may not see lb's state", self.address, exc
                )
            return False
        return True

    def ready(self, status: str) -> bool:
        return self.send(message(READY=1, STATUS=status))

    def reloading(self) -> bool:
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.send(message(RELOADING=1, MONOTONIC_USEC=usec, STATUS="reloading"))

    def stopping(self, status: str = "stopping") -> bool:
        self.stop_watchdog()
        return self.send(message(STOPPING=1, STATUS=status))

    def start_watchdog(self, loop: asyncio.AbstractEventLoop) -> None:
        """Ping ``WATCHDOG=1`` from ``loop`` every half ``$WATCHDOG_USEC`` (when it is set)."""
        if self.address is None or self.watchdog is None or self._timer is not None:
            return
        interval = self.watchdog

        def ping() -> None:
            self.send(b"WATCHDOG=1")
            self._timer = loop.call_later(interval, ping)

        ping()

    def stop_watchdog(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def close(self) -> None:
        self.stop_watchdog()
        if self._sock is not None:
            self._sock.close()
            self._sock = None

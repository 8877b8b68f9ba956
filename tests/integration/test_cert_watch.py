"""``[listeners.tls] watch = true``: lb notices a renewed certificate on its own (no ``lbctl
reload``, no SIGHUP), end to end with lb as a real process and Python's ssl as the client.

A replaced certificate is served to new handshakes within a few ``watch_interval``; a
connection opened before keeps working; a broken replacement is refused with the file named in
the log, and the last good certificate keeps serving; nothing is reloaded while nothing changes.
"""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import time
from pathlib import Path
from typing import Any

from cryptography import x509

from tests.certs import Authority, Pair
from tests.helpers import Proc, ProcessGroup, free_port


def serial_of(pair: Pair) -> int:
    return x509.load_pem_x509_certificate(pair.cert.read_bytes()).serial_number


def served_serial(port: int, ctx: ssl.SSLContext) -> int:
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        ctx.wrap_socket(raw, server_hostname="web.test") as s,
    ):
        der = s.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


def wait_serial(port: int, ctx: ssl.SSLContext, serial: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while served_serial(port, ctx) != serial and time.monotonic() < deadline:
        time.sleep(0.1)
    assert served_serial(port, ctx) == serial


def replace(into: Pair, new: Pair) -> None:
    """As a renewal tool does it: each file written aside, then renamed into place."""
    for src, dst in ((new.cert, into.cert), (new.key, into.key)):
        shutil.copy(src, f"{dst}.tmp")
        os.replace(f"{dst}.tmp", dst)


def get(s: ssl.SSLSocket) -> bytes:
    """One keep-alive request on an open connection; the head of the answer."""
    s.sendall(b"GET / HTTP/1.1\r\nHost: web.test\r\n\r\n")
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        assert chunk, "closed"
        data += chunk
    return data


def reloads(lb: Proc) -> list[str]:
    return [x for x in lb.output().splitlines() if "reload (" in x]


def test_a_renewed_certificate_is_served_without_a_reload_command(
    procs: ProcessGroup, tmp_path: Path
) -> None:
    ca = Authority(tmp_path / "certs")
    live = ca.issue("live", "web.test")
    be = procs.backend("be")
    port = free_port()
    cfg: dict[str, Any] = {
        "lb": {"workers": 1},
        "listeners": [
            {
                "name": "web",
                "bind": f"127.0.0.1:{port}",
                "mode": "http",
                "pool": "p",
                "tls": {
                    "certificates": [{"cert": str(live.cert), "key": str(live.key)}],
                    "watch": True,
                    "watch_interval": "200ms",
                },
            }
        ],
        "pools": {"p": {"backends": [{"address": f"127.0.0.1:{be.port}"}]}},
    }
    lb = procs.lb(cfg)
    ctx = ssl.create_default_context(cafile=str(ca.ca_pem))
    first = serial_of(live)
    assert served_serial(port, ctx) == first

    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        ctx.wrap_socket(raw, server_hostname="web.test") as kept,
    ):
        assert get(kept).startswith(b"HTTP/1.1 200")
        time.sleep(1.0)  # five polls of unchanged files
        assert reloads(lb) == []

        renewed = ca.issue("renewed", "web.test")
        replace(live, renewed)
        wait_serial(port, ctx, serial_of(renewed))
        assert any("certificate file changed" in x for x in reloads(lb)), lb.output()
        # the connection opened before the renewal is still served
        assert get(kept).startswith(b"HTTP/1.1 200")

    # a broken replacement: refused, the file named; the renewed certificate keeps serving
    live.cert.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    deadline = time.monotonic() + 10
    while "refused" not in lb.output() and time.monotonic() < deadline:
        time.sleep(0.1)
    out = lb.output()
    refusal = out[out.index("refused") :]
    assert str(live.cert) in refusal and "listeners[0].tls.certificates[0]" in refusal, out
    assert served_serial(port, ctx) == serial_of(renewed)

    # fixed by writing a good one again: watched still
    again = ca.issue("again", "web.test")
    replace(live, again)
    wait_serial(port, ctx, serial_of(again))

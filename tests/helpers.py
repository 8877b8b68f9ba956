"""Helpers to run real processes (lb, demo backends) on loopback for tests."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


_issued: set[int] = set()


def free_port() -> int:
    """A port nothing listens on now, never handed out before by this process: the kernel can
    give the same free port to two calls in a row, and a test that takes several (a listener,
    its admin listener, "dead" backends) must get distinct ones."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in _issued:
            _issued.add(port)
            return port


def wait_port(port: int, timeout: float = 10.0, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return
        time.sleep(0.02)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout}s")


def toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    raise TypeError(v)


def to_toml(cfg: dict[str, Any]) -> str:
    """A tiny TOML writer for test configs (tables, arrays of tables, scalars)."""
    out: list[str] = []

    def table(prefix: str, d: dict[str, Any], header: str | None) -> None:
        scalars = {k: v for k, v in d.items() if not isinstance(v, dict | list) or _scalar_list(v)}
        if header is not None:
            out.append(header)
        for k, v in scalars.items():
            out.append(f"{k} = {toml_value(v)}")
        out.append("")
        for k, v in d.items():
            if k in scalars:
                continue
            path = f"{prefix}.{k}" if prefix else k
            if isinstance(v, dict):
                table(path, v, f"[{path}]")
            else:
                for item in v:
                    table(path, item, f"[[{path}]]")

    table("", cfg, None)
    return "\n".join(out)


def _scalar_list(v: Any) -> bool:
    return isinstance(v, list) and not any(isinstance(x, dict) for x in v)


@dataclass
class Proc:
    popen: subprocess.Popen[bytes]
    name: str
    port: int = 0
    log: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        return self.popen.returncode

    def output(self) -> str:
        return self.log.read_text() if self.log and self.log.exists() else ""


class ProcessGroup:
    """Starts processes and guarantees they are stopped at teardown."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.procs: list[Proc] = []

    def spawn(self, name: str, args: list[str], port: int = 0) -> Proc:
        logf = self.tmp / f"{name}.log"
        fh = logf.open("wb")
        popen = subprocess.Popen(
            args, stdout=fh, stderr=subprocess.STDOUT, cwd=ROOT, stdin=subprocess.DEVNULL
        )
        fh.close()
        p = Proc(popen, name, port, logf)
        self.procs.append(p)
        return p

    def backend(self, name: str | None = None, *extra: str, port: int | None = None) -> Proc:
        port = port or free_port()
        name = name or f"backend-{port}"
        p = self.spawn(
            name,
            [sys.executable, "-m", "lb.demo_server", "--port", str(port), "--name", name, *extra],
            port,
        )
        wait_port(port)
        return p

    def lb(self, config: dict[str, Any], name: str = "lb", wait: bool = True) -> Proc:
        path = self.tmp / f"{name}.toml"
        path.write_text(to_toml(config))
        p = self.spawn(name, [sys.executable, "-m", "lb", "run", "-c", str(path)])
        p.extra["config_path"] = path
        if wait:
            # The banner is printed once every worker is ready.
            deadline = time.monotonic() + 20
            while "lb: running" not in p.output():
                if p.popen.poll() is not None or time.monotonic() > deadline:
                    p.stop(signal.SIGKILL)
                    raise AssertionError(f"lb did not start:\n{p.output()}")
                time.sleep(0.02)
            p.port = int(config["listeners"][0]["bind"].rsplit(":", 1)[1])
        return p

    def close(self) -> None:
        for p in reversed(self.procs):
            p.stop(signal.SIGTERM, timeout=10)


def children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(x) for x in text.split()]


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def http_get(port: int, path: str = "/", timeout: float = 5.0) -> tuple[int, dict[str, str], bytes]:
    """One request over a new connection with Connection: close; returns status, headers, body."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    return status, headers, body


def env_flag(name: str) -> bool:
    return os.environ.get(name, "") not in ("", "0", "false", "no")


def read_until_close(s: socket.socket) -> bytes:
    """All bytes until the peer closes (a reset counts as a close; a timeout raises)."""
    out = b""
    try:
        while chunk := s.recv(65536):
            out += chunk
    except ConnectionResetError:
        pass
    return out

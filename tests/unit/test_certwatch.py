"""``[listeners.tls] watch``: its config fields, and the watcher's decisions over real files
(a ``stat`` each; no sockets, no event loop)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from lb.certwatch import CertWatcher, watched_files
from lb.config import Config, ConfigError, parse_config


def config(tmp_path: Path, **tls: Any) -> Config:
    cert, key = tmp_path / "a.pem", tmp_path / "a.key"
    return parse_config(
        {
            "listeners": [
                {
                    "name": "web",
                    "bind": "127.0.0.1:8443",
                    "mode": "http",
                    "pool": "p",
                    "tls": {"certificates": [{"cert": str(cert), "key": str(key)}], **tls},
                }
            ],
            "pools": {"p": {"backends": [{"address": "127.0.0.1:9000"}]}},
        }
    )


@pytest.mark.parametrize("value", ["0s", "50ms", "2h"])
def test_watch_interval_out_of_range_is_refused(tmp_path: Path, value: str) -> None:
    with pytest.raises(ConfigError) as err:
        config(tmp_path, watch=True, watch_interval=value)
    assert "listeners[0].tls.watch_interval" in str(err.value)


def test_defaults_and_files(tmp_path: Path) -> None:
    off = config(tmp_path)
    assert off.listeners[0].tls is not None and off.listeners[0].tls.watch is False
    assert off.listeners[0].tls.watch_interval == 5.0
    assert watched_files(off) == ([], None)
    on = config(tmp_path, watch=True, watch_interval="1s")
    assert watched_files(on) == ([str(tmp_path / "a.pem"), str(tmp_path / "a.key")], 1.0)


def test_a_change_asks_for_one_reload(tmp_path: Path) -> None:
    cfg = config(tmp_path, watch=True)
    (tmp_path / "a.pem").write_text("one")
    (tmp_path / "a.key").write_text("key")
    asked: list[str] = []
    w = CertWatcher(lambda: cfg, asked.append)
    assert w.poll() == 5.0 and asked == []  # the first look only records
    assert w.poll() == 5.0 and asked == []  # nothing changed
    (tmp_path / "a.pem").write_text("two, longer")
    w.poll()
    assert asked == [f"certificate file changed: {tmp_path / 'a.pem'}"]
    w.poll()
    assert len(asked) == 1  # once per change, even when the reload was refused
    os.remove(tmp_path / "a.key")  # gone is a change too (the reload will say why)
    w.poll()
    assert asked[-1].endswith("a.key")

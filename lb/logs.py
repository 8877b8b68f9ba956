"""Logging setup: text for a terminal, JSON lines (orjson) for machines.

Structured events pass their fields in ``extra={"event": {...}}``; the JSON formatter merges
them into the line, the text formatter appends them as ``key=value``.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import orjson


class TextFormatter(logging.Formatter):
    def __init__(self, role: str) -> None:
        super().__init__()
        self.role = role

    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(record.created))
        line = f"{ts} {record.levelname:<7} [{self.role}] {record.name}: {record.getMessage()}"
        event: dict[str, Any] | None = getattr(record, "event", None)
        if event:
            line += " " + " ".join(f"{k}={logfmt_value(v)}" for k, v in event.items())
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def logfmt_value(v: Any) -> str:
    """A ``key=value`` value that stays one token (logfmt): quoted, with JSON string escapes,
    when it has spaces, quotes, ``=`` or control characters. Lists are joined with "; "."""
    if isinstance(v, list | tuple):
        text = "; ".join(str(x) for x in v)
    elif isinstance(v, dict):
        text = orjson.dumps(v, default=str).decode()
    else:
        text = str(v)
    if text and text.isprintable() and not any(c in text for c in ' "=\\'):
        return text
    return orjson.dumps(text).decode()


class JsonFormatter(logging.Formatter):
    def __init__(self, role: str) -> None:
        super().__init__()
        self.role = role

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": round(record.created, 3),
            "level": record.levelname.lower(),
            "process": self.role,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        event = getattr(record, "event", None)
        if event:
            doc.update(event)
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(doc, default=str).decode()


def setup_logging(fmt: str, level: str, role: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(role) if fmt == "json" else TextFormatter(role))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())

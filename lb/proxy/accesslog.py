"""A listener's access log: JSON lines, buffered in memory, written about once a second.

Nothing on the request path writes to a file: an exchange (L7) or a relay (L4) appends one
preformatted line to ``lines``, and the listener's flush timer writes them. ``lines`` is
``None`` while the log is off, so the hot path pays one ``is not None`` test.

A reload calls :meth:`reconfigure`: a new path flushes and closes the old file and opens the
new one, ``None`` turns the log off, and the same path keeps the open file.
"""

from __future__ import annotations

from pathlib import Path
from typing import IO


class AccessLog:
    __slots__ = ("_file", "lines", "path")

    def __init__(self, path: str | None = None) -> None:
        self.path: str | None = None
        self.lines: list[bytes] | None = None
        self._file: IO[bytes] | None = None
        self.reconfigure(path)

    def reconfigure(self, path: str | None) -> None:
        if path == self.path:
            return
        self.close()
        self.path = path
        if path is not None:
            p = Path(path)
            p.parent.mkdir(parents=True, exist_ok=True)
            self._file = p.open("ab")  # closed by close()
            self.lines = []

    def flush(self) -> None:
        lines = self.lines
        if self._file is not None and lines:
            self._file.write(b"".join(lines))
            self._file.flush()
            lines.clear()

    def close(self) -> None:
        self.flush()
        if self._file is not None:
            self._file.close()
            self._file = None
        self.lines = None
        self.path = None

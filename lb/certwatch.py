"""Watching listener certificate files: ``[listeners.tls] watch = true``.

Owns: one supervisor task that looks at (``stat``) the certificate, key and ``client_ca`` files
of every listener with ``watch = true``, every ``watch_interval`` (the smallest of them), and
asks for a reload when one changed.

Never does: read a certificate, or change anything itself. A change goes through the reload
callback, the path ``lbctl reload`` and SIGHUP take (``ControlService.reload_soon``): the
supervisor checks the files first and refuses a bad one, naming the field, the file and the
reason, while the running certificates keep serving; good files reach every worker, where new
handshakes get them and open connections keep theirs.

Theory of operation
-------------------
``poll`` compares each watched file's stamp (``lb.tls.file_stamps``: mtime, size, inode) with
the one it saw last, and always keeps the new stamps. So a change triggers one reload: a
broken file is refused once and not retried until it changes again (an operator who fixes it
fixes it by writing it, which is a change). A file replaced in two steps (certificate, then
key) may give a refused reload and then a good one. The first poll, and every file a reload
adds to the watch, only records stamps. The set of files and the interval are read from the
running config at every poll, so a reload that turns ``watch`` on or off applies at once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from lb.config import Config
from lb.tls import FileStamp, changed_files, file_stamps

IDLE_INTERVAL = 5.0  # how often to look again at a config where no listener watches


def watched_files(config: Config) -> tuple[list[str], float | None]:
    """The files to watch and the interval to poll them at (None: nothing is watched)."""
    paths: dict[str, None] = {}
    interval: float | None = None
    for lc in config.listeners:
        t = lc.tls
        if t is None or not t.watch:
            continue
        for c in t.certificates:
            paths[c.cert] = None
            paths[c.key] = None
        if t.client_ca is not None:
            paths[t.client_ca] = None
        interval = t.watch_interval if interval is None else min(interval, t.watch_interval)
    return list(paths), interval


class CertWatcher:
    """See the module docstring."""

    def __init__(self, config: Callable[[], Config], reload: Callable[[str], None]) -> None:
        self.config = config
        self.reload = reload
        self.stamps: dict[str, FileStamp] = {}
        self.task: asyncio.Task[None] | None = None

    def poll(self) -> float | None:
        """Look at the files once; ask for a reload if any changed. The next interval."""
        paths, interval = watched_files(self.config())
        now = file_stamps(paths)
        changed = changed_files(self.stamps, now)
        self.stamps = now
        if changed:
            self.reload(f"certificate file changed: {', '.join(changed)}")
        return interval

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self.poll()  # the stamps to compare with
        self.task = loop.create_task(self._run())

    async def _run(self) -> None:
        interval = watched_files(self.config())[1]
        while True:
            await asyncio.sleep(interval or IDLE_INTERVAL)
            interval = self.poll()

    async def stop(self) -> None:
        task, self.task = self.task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

"""WAL checkpoints off the commit path.

In WAL mode every commit appends pages to the log, and a checkpoint copies them back into
the database file. SQLite's automatic checkpoint runs inside the COMMIT that pushes the
log past 1,000 pages, so that commit (a learner's write, or the last import of a sync
frame) waits for tens of megabytes to be copied and fsynced. The writer's connection
turns it off (``wal_autocheckpoint = 0``) and a ``Checkpointer`` thread, with its own
connection, runs passive checkpoints shortly after commits instead: a passive
checkpoint never blocks the writer, and the log is reused from its start once a
checkpoint has caught up and no reader still needs the old pages.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from pathlib import Path
from typing import Callable

log = logging.getLogger(__name__)


class Checkpointer:
    """A thread that checkpoints the WAL of ``path`` at most every ``interval`` seconds
    while commits come (``committed`` wakes it)."""

    def __init__(self, path: Path, connect: Callable[[Path], sqlite3.Connection], *, interval: float = 0.2) -> None:
        self._path, self._connect, self._interval = path, connect, interval
        self._wake = threading.Event()
        self._stop = threading.Event()
        self.checkpoints = 0
        self._thread = threading.Thread(target=self._run, name="syncd-checkpoint", daemon=True)
        self._thread.start()

    def committed(self) -> None:
        """A commit added pages to the log (cheap: the writer calls it after each one)."""
        self._wake.set()

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join()

    def _run(self) -> None:
        try:
            conn = self._connect(self._path)
        except sqlite3.Error as exc:
            log.error("the checkpoint thread could not open the database (%s): the WAL grows until a restart", exc)
            return
        try:
            while True:
                self._wake.wait()
                if self._stop.is_set():
                    break
                self._wake.clear()
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                    self.checkpoints += 1
                except sqlite3.Error as exc:  # (a busy or full disk: the next commit tries again)
                    log.warning("a WAL checkpoint failed: %s", exc)
                # (at most one a pause: a burst of commits is checkpointed in a few passes)
                if self._stop.wait(self._interval):
                    break
        finally:
            conn.close()

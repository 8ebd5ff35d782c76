"""What happens to jobs after they end: outcomes the store could not record yet (a full disk
refuses SQLite's write too) are held in memory, shown by the API as if recorded, and written
as soon as the disk takes them; retention deletes what is kept too long or takes too much.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .store import JobStore

log = logging.getLogger("tunesmith.server")


class HeldOutcomes:
    """job id -> (status, error, the write that records it). Not thread-safe: the worker
    calls it under its own lock."""

    def __init__(self) -> None:
        self._held: dict[str, tuple[str, str | None, Callable[[], None]]] = {}

    def __bool__(self) -> bool:
        return bool(self._held)

    def write_or_hold(
        self, job_id: str, status: str, error: str | None, write: Callable[[], None]
    ) -> None:
        try:
            write()
        except (sqlite3.Error, OSError) as err:
            log.error("recording job %s as %s failed (%s); holding it", job_id, status, err)
            self._held[job_id] = (status, error, write)

    def flush(self) -> None:
        """Write what the store takes now, oldest first (stop at the first refusal)."""
        for job_id, (status, _error, write) in list(self._held.items()):
            try:
                write()
            except (sqlite3.Error, OSError):
                return  # still full: try again later
            del self._held[job_id]
            log.info("recorded job %s as %s", job_id, status)

    def get(self, job_id: str) -> tuple[str, str | None] | None:
        held = self._held.get(job_id)
        return None if held is None else (held[0], held[1])

    def drop(self, job_id: str) -> None:
        self._held.pop(job_id, None)


def retain(
    store: JobStore, keep_seconds: float | None, max_bytes: int | None, in_use: set[str]
) -> None:
    """Delete finished jobs and uploads (but those in `in_use`) older than `keep_seconds`,
    then the oldest while their files pass `max_bytes`."""
    if keep_seconds is None and max_bytes is None:
        return
    import time

    older = None if keep_seconds is None else time.time() - keep_seconds
    try:
        for kind, item in store.expired(older, max_bytes, in_use):
            if kind == "job":
                store.delete(item)
            else:
                store.delete_upload(item)
            log.info("retention removed %s %s", kind, item)
    except Exception as err:  # a full disk, or the store closing: try again later
        log.error("retention failed: %s", err)

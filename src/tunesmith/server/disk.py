"""The data folder's disk: how much room it has, whether an error means it is full, and a
small reserve file that lets a delete go through when it is.

A full disk is a state the server waits out, not a failure of the jobs caught in it: the
worker takes no job while the disk is below the floor (or below what a job that failed for
room needed), and /readyz says why. The reserve is released when SQLite cannot write a
delete (it needs a few pages even to remove a row), then made again once there is room.
"""

from __future__ import annotations

import errno
import os
import shutil
import sqlite3
from pathlib import Path

RESERVE_NAME = ".tunesmith-reserve"
RESERVE_BYTES = 256 * 1024  # a few dozen SQLite pages: room for any one delete
_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT}


class DiskGuard:
    """Free space of the disk under `folder`, against a floor of `min_free_bytes`."""

    def __init__(self, folder: Path, min_free_bytes: int = 0) -> None:
        self.folder = Path(folder)
        self.min_free_bytes = min_free_bytes
        self.wanted = 0  # bytes a job that failed for room needs (0: none waits)

    def free(self) -> int:
        return shutil.disk_usage(self.folder).free

    def low(self) -> str | None:
        """Why the disk takes no new job now (None: it has room)."""
        free = self.free()
        if free < self.min_free_bytes:
            return (
                f"the data folder's disk has under {self.min_free_bytes // 2**20} MiB free; "
                "no new jobs until space is freed"
            )
        if free < self.wanted:
            return (
                f"the data folder's disk is full (a job needs {self.wanted // 1024} KiB to "
                "write its audio); queued jobs wait until space is freed"
            )
        return None

    def wait_for(self, nbytes: int) -> None:
        """Take no job until `nbytes` (and the floor) are free: a job failed for room."""
        self.wanted = max(self.wanted, nbytes)

    def settle(self) -> bool:
        """True when the disk has room for jobs again (and forget what was wanted)."""
        if self.low() is not None:
            return False
        self.wanted = 0
        return True

    def short_of(self, nbytes: int) -> bool:
        """Whether `nbytes` more would not fit (with the floor kept): after a failed write,
        this tells a full disk from another failure."""
        return self.free() < nbytes + self.min_free_bytes


def is_full(err: BaseException) -> bool:
    """Whether `err` says the disk (or SQLite's file on it) is full."""
    if isinstance(err, OSError) and err.errno in _FULL_ERRNOS:
        return True
    if isinstance(err, sqlite3.OperationalError):
        return "full" in str(err).lower()
    cause = err.__cause__ or err.__context__
    return cause is not None and cause is not err and is_full(cause)


class Reserve:
    """A file of RESERVE_BYTES in the data folder, given up when a delete needs the room."""

    def __init__(self, folder: Path) -> None:
        self.path = Path(folder) / RESERVE_NAME

    def restore(self) -> bool:
        """Make the reserve if it is missing and the disk has room for it twice over."""
        if self.path.is_file():
            return True
        if shutil.disk_usage(self.path.parent).free < 2 * RESERVE_BYTES:
            return False
        tmp = self.path.with_suffix(".tmp")
        try:
            with open(tmp, "wb") as f:
                f.write(b"\0" * RESERVE_BYTES)
                f.flush()
                os.fsync(f.fileno())  # real blocks, not a promise of them
            os.replace(tmp, self.path)
            return True
        except OSError:
            tmp.unlink(missing_ok=True)
            return False

    def release(self) -> bool:
        """Free the reserve's room; False if there was none to free."""
        try:
            self.path.unlink()
            return True
        except FileNotFoundError:
            return False

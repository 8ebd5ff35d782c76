"""Jobs in SQLite, audio files beside them: one data folder holds everything the server keeps.

    data_dir/
      tunesmith.db      one row per job (settings as JSON, status, times, error, peaks, owner)
                        and per upload (what it holds, owner); its layout: `migrations`
      audio/<id>.<ext>  finished audio, written to a temporary name and renamed when complete
      audio/<id>.png    its spectrogram, made on first request and kept
      uploads/<id>      uploaded audio (an audio prompt or a melody)

Opening a store settles what the last process left behind: its queued jobs stay queued (the
worker runs them), a job it was running goes back to the queue (at most `max_attempts` starts
in all, then it fails with that reason), and half-written temporary files are removed.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .disk import Reserve, is_full
from .migrations import migrate
from .schemas import FINISHED, GenerationRequest
from .settings import DEFAULT_MAX_ATTEMPTS

INTERRUPTED_MESSAGE = "the server stopped before this job finished; submit it again"


@dataclass(frozen=True)
class JobRecord:
    """One row of the jobs table."""

    id: str
    status: str
    params: GenerationRequest
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    steps_done: int = 0
    steps_total: int = 0
    batch_size: int | None = None
    audio_file: str | None = None
    audio_seconds: float | None = None
    error: str | None = None
    attempts: int = 0
    owner: str | None = None  # the API key's name that made it (None: made without one)


@dataclass(frozen=True)
class UploadRecord:
    """One row of the uploads table: an audio file decoded whole when it arrived."""

    id: str
    owner: str | None
    created_at: float
    seconds: float
    sample_rate: int
    channels: int
    bytes: int


EVERYONE = None  # `visible_to` for a caller who sees every row (an admin key, or no keys)
FINISHED_SQL = "('done', 'failed', 'cancelled', 'interrupted')"


class StoreFullError(Exception):
    """The disk is full and the store could not make room for a write."""


class JobStore:
    """Thread-safe access to the jobs table and the audio folder (one connection, one lock).

    Reads take `visible_to`: a key's name sees only its own rows; EVERYONE (None) sees all.
    """

    def __init__(self, data_dir: Path, max_attempts: int = DEFAULT_MAX_ATTEMPTS) -> None:
        self.data_dir = Path(data_dir)
        self.audio_dir = self.data_dir / "audio"
        self.upload_dir = self.data_dir / "uploads"
        self.audio_dir.mkdir(parents=True, exist_ok=True)
        self.upload_dir.mkdir(exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(
            self.data_dir / "tunesmith.db", check_same_thread=False, isolation_level=None
        )
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self.migrated_from = migrate(self._db, self.data_dir)
        self.reserve = Reserve(self.data_dir)
        self.reserve.restore()
        self.recovered = self._recover(max_attempts)

    def _recover(self, max_attempts: int) -> tuple[int, int]:
        """Put the jobs a previous process was running back in the queue, or fail those that
        have been started `max_attempts` times; drop temp files. (re-queued, failed)."""
        for folder in (self.audio_dir, self.upload_dir):
            for tmp in folder.glob(".tunesmith-*"):
                tmp.unlink(missing_ok=True)
        with self._lock:
            failed = self._db.execute(
                "UPDATE jobs SET status='failed', finished_at=?, error='the server stopped ' || "
                "attempts || ' time(s) while running this job (at most ' || ? || ' attempts)' "
                "WHERE status='running' AND attempts >= ?",
                (time.time(), max_attempts, max_attempts),
            ).rowcount
            requeued = self._db.execute(
                "UPDATE jobs SET status='queued', started_at=NULL, steps_done=0, steps_total=0, "
                "batch_size=NULL WHERE status='running'"
            ).rowcount
        return requeued, failed

    def queued(self) -> list[tuple[str, GenerationRequest, str | None]]:
        """The queued jobs (id, settings, owner), oldest first: what a starting worker takes."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, params, owner FROM jobs WHERE status='queued' "
                "ORDER BY created_at, rowid"
            ).fetchall()
        return [
            (r["id"], GenerationRequest.model_validate_json(r["params"]), r["owner"]) for r in rows
        ]

    def requeue(self, job_ids: list[str]) -> None:
        """Running jobs a stopping server gave up on (or that found the disk full) go back to
        the queue (not their fault: the attempt is not counted)."""
        with self._lock:
            self._db.executemany(
                "UPDATE jobs SET status='queued', started_at=NULL, steps_done=0, steps_total=0, "
                "batch_size=NULL, attempts=MAX(0, attempts - 1) WHERE id=? AND status='running'",
                [(i,) for i in job_ids],
            )

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def audio_path(self, record: JobRecord) -> Path | None:
        """Where the job's audio file lies, if it has one and it is still on disk."""
        if record.audio_file is None:
            return None
        path = self.audio_dir / record.audio_file
        return path if path.is_file() else None

    def picture_path(self, job_id: str) -> Path:
        """Where the job's spectrogram is kept (made on first request)."""
        return self.audio_dir / f"{job_id}.png"

    # --- writes -----------------------------------------------------------------------------

    def insert(
        self,
        job_id: str,
        params: GenerationRequest,
        created_at: float,
        idempotency: tuple[str | None, str] | None = None,
        owner: str | None = None,
    ) -> None:
        """A new queued job; with (Idempotency-Key, request digest), the key is kept with it
        (the owner's own) in the same transaction."""
        with self._lock, self._db:
            self._db.execute("BEGIN")
            self._db.execute(
                "INSERT INTO jobs (id, status, params, created_at, owner) "
                "VALUES (?, 'queued', ?, ?, ?)",
                (job_id, params.model_dump_json(), created_at, owner),
            )
            if idempotency is not None and idempotency[0] is not None:
                self._db.execute(
                    "INSERT INTO idempotency (owner, key, job_id, digest, created_at) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (owner or "", idempotency[0], job_id, idempotency[1], created_at),
                )

    def idempotent(self, key: str, owner: str | None) -> tuple[str, str] | None:
        """(job id, request digest) the owner first used an Idempotency-Key for."""
        with self._lock:
            row = self._db.execute(
                "SELECT job_id, digest FROM idempotency WHERE owner=? AND key=?",
                (owner or "", key),
            ).fetchone()
        return None if row is None else (row["job_id"], row["digest"])

    def mark_running(self, job_ids: list[str], started_at: float, steps_total: int) -> None:
        # 'running' too: a job put back for room whose re-queueing the full disk refused
        with self._lock:
            self._db.executemany(
                "UPDATE jobs SET status='running', started_at=?, steps_total=?, batch_size=?, "
                "attempts=attempts + 1 WHERE id=? AND status IN ('queued', 'running')",
                [(started_at, steps_total, len(job_ids), i) for i in job_ids],
            )

    def mark_done(
        self, job_id: str, audio_file: str, audio_seconds: float, peaks: list[float], steps: int
    ) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE jobs SET status='done', finished_at=?, audio_file=?, audio_seconds=?, "
                "peaks=?, steps_done=?, steps_total=?, error=NULL WHERE id=?",
                (time.time(), audio_file, audio_seconds, json.dumps(peaks), steps, steps, job_id),
            )

    def mark_finished(
        self,
        job_id: str,
        status: str,
        error: str | None,
        progress: tuple[int, int] | None = None,
    ) -> None:
        """End a job without audio (failed, cancelled or interrupted), with a message and
        the (steps done, steps in all) it had reached."""
        assert status in FINISHED and status != "done"
        done, total = progress if progress is not None else (None, None)
        with self._lock:
            self._db.execute(
                "UPDATE jobs SET status=?, error=?, finished_at=?, "
                "steps_done=COALESCE(?, steps_done), steps_total=COALESCE(?, steps_total) "
                "WHERE id=?",
                (status, error, time.time(), done, total, job_id),
            )

    def delete(self, job_id: str) -> bool:
        """Remove a finished job with its audio and picture (of several callers, one is told
        it deleted the job); False if there is no such finished job.

        Works on a full disk: the files go first (freeing their room), and where SQLite
        still cannot write, the reserve file is given up for it (StoreFullError if even
        that is not enough)."""
        with self._lock:
            row = self._db.execute(
                f"SELECT audio_file FROM jobs WHERE id=? AND status IN {FINISHED_SQL}", (job_id,)
            ).fetchone()
            if row is None:
                return False
            if row["audio_file"]:
                (self.audio_dir / row["audio_file"]).unlink(missing_ok=True)
            self.picture_path(job_id).unlink(missing_ok=True)

            def remove() -> int:
                self._db.execute("DELETE FROM idempotency WHERE job_id=?", (job_id,))
                sql = f"DELETE FROM jobs WHERE id=? AND status IN {FINISHED_SQL}"
                return int(self._db.execute(sql, (job_id,)).rowcount)

            gone = self._write_making_room(remove)
        return bool(gone)

    def _write_making_room(self, write: Callable[[], int]) -> int:
        """Run a write in one transaction; on a full disk, give up the reserve and try once
        more. The caller holds the lock."""
        for attempt in range(2):
            try:
                self._db.execute("BEGIN IMMEDIATE")
                changed = write()
                self._db.execute("COMMIT")
                return changed
            except sqlite3.OperationalError as err:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                if not is_full(err):
                    raise
                if attempt or not self.reserve.release():
                    raise StoreFullError(
                        "the data folder's disk is full; free some space on it"
                    ) from None
        raise AssertionError("unreachable")

    # --- uploads ----------------------------------------------------------------------------

    def add_upload(self, record: UploadRecord) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO uploads (id, owner, created_at, seconds, sample_rate, channels, "
                "bytes) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (record.id, record.owner, record.created_at, record.seconds, record.sample_rate,
                 record.channels, record.bytes),
            )  # fmt: skip

    def upload(self, upload_id: str, visible_to: str | None = EVERYONE) -> UploadRecord | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM uploads WHERE id=?", (upload_id,)).fetchone()
        if row is None or not _sees(visible_to, row["owner"]):
            return None
        return UploadRecord(
            id=row["id"], owner=row["owner"], created_at=row["created_at"],
            seconds=row["seconds"], sample_rate=row["sample_rate"], channels=row["channels"],
            bytes=row["bytes"],
        )  # fmt: skip

    def delete_upload(self, upload_id: str) -> bool:
        """Remove an upload and its file (works on a full disk, as `delete` does)."""
        with self._lock:
            (self.upload_dir / upload_id).unlink(missing_ok=True)
            gone = self._write_making_room(
                lambda: self._db.execute("DELETE FROM uploads WHERE id=?", (upload_id,)).rowcount
            )
        return bool(gone)

    # --- reads ------------------------------------------------------------------------------

    def get(self, job_id: str, visible_to: str | None = EVERYONE) -> JobRecord | None:
        """The job, or None if there is none the caller may see (another key's job looks
        exactly like a missing one)."""
        with self._lock:
            row = self._db.execute("SELECT * FROM jobs WHERE id=?", (job_id,)).fetchone()
        return None if row is None or not _sees(visible_to, row["owner"]) else _record(row)

    def peaks(self, job_id: str) -> list[float] | None:
        with self._lock:
            row = self._db.execute("SELECT peaks FROM jobs WHERE id=?", (job_id,)).fetchone()
        return None if row is None or row["peaks"] is None else json.loads(row["peaks"])

    def expired(
        self, older_than: float | None, max_bytes: int | None, keep_uploads: set[str]
    ) -> list[tuple[str, str]]:
        """What retention removes, oldest first, as ("job" | "upload", id): finished jobs and
        uploads (but those in `keep_uploads`, which live jobs use) from before `older_than`
        (a time), then the oldest others while their files together pass `max_bytes`."""
        with self._lock:
            jobs = self._db.execute(
                f"SELECT id, finished_at AS t, audio_file FROM jobs WHERE status IN "
                f"{FINISHED_SQL} ORDER BY finished_at, rowid"
            ).fetchall()
            uploads = self._db.execute(
                "SELECT id, created_at AS t, bytes FROM uploads ORDER BY created_at"
            ).fetchall()
        items = [("job", r["id"], r["t"] or 0.0, self._job_bytes(r)) for r in jobs]
        items += [
            ("upload", r["id"], r["t"], r["bytes"]) for r in uploads if r["id"] not in keep_uploads
        ]
        items.sort(key=lambda item: item[2])
        gone = [(kind, i) for kind, i, t, _ in items if older_than is not None and t < older_than]
        if max_bytes is not None:
            total = sum(size for kind, i, _, size in items if (kind, i) not in gone)
            for kind, i, _, size in items:
                if total <= max_bytes:
                    break
                if (kind, i) not in gone:
                    gone.append((kind, i))
                    total -= size
        return gone

    def _job_bytes(self, row: sqlite3.Row) -> int:
        paths = [self.picture_path(row["id"])]
        if row["audio_file"]:
            paths.append(self.audio_dir / row["audio_file"])
        return sum(p.stat().st_size for p in paths if p.is_file())

    def counts(self) -> dict[str, int]:
        """How many jobs the store holds in each status."""
        with self._lock:
            rows = self._db.execute("SELECT status, COUNT(*) AS n FROM jobs GROUP BY status")
            return {row["status"]: int(row["n"]) for row in rows.fetchall()}

    def list(
        self,
        limit: int,
        offset: int,
        status: str | None = None,
        visible_to: str | None = EVERYONE,
    ) -> tuple[list[JobRecord], int]:
        """A page of the jobs the caller may see, newest first, and how many match in all."""
        clauses, args = [], []
        if status:
            clauses.append("status=?")
            args.append(status)
        if visible_to is not EVERYONE:
            clauses.append("owner=?")
            args.append(visible_to)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        with self._lock:
            total = self._db.execute(f"SELECT COUNT(*) FROM jobs {where}", args).fetchone()[0]
            rows = self._db.execute(
                f"SELECT * FROM jobs {where} ORDER BY created_at DESC, rowid DESC LIMIT ? OFFSET ?",
                [*args, limit, offset],
            ).fetchall()
        return [_record(r) for r in rows], int(total)


def _sees(visible_to: str | None, owner: str | None) -> bool:
    return visible_to is EVERYONE or owner == visible_to


def _record(row: sqlite3.Row) -> JobRecord:
    return JobRecord(
        id=row["id"],
        status=row["status"],
        params=GenerationRequest.model_validate_json(row["params"]),
        created_at=row["created_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        steps_done=row["steps_done"],
        steps_total=row["steps_total"],
        batch_size=row["batch_size"],
        audio_file=row["audio_file"],
        audio_seconds=row["audio_seconds"],
        error=row["error"],
        attempts=row["attempts"],
        owner=row["owner"],
    )

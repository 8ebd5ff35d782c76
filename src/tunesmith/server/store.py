"""Jobs in SQLite, audio files beside them: one data folder holds everything the server keeps.

    data_dir/
      tunesmith.db      one row per job (settings as JSON, status, times, error, peaks)
      audio/<id>.<ext>  finished audio, written to a temporary name and renamed when complete

Opening a store settles what the last process left behind: its queued jobs stay queued (the
worker runs them), a job it was running goes back to the queue (at most `max_attempts` starts
in all, then it fails with that reason), and half-written temporary files are removed.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from .schemas import FINISHED, GenerationRequest
from .settings import DEFAULT_MAX_ATTEMPTS

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    params TEXT NOT NULL,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    steps_done INTEGER NOT NULL DEFAULT 0,
    steps_total INTEGER NOT NULL DEFAULT 0,
    batch_size INTEGER,
    audio_file TEXT,
    audio_seconds REAL,
    peaks TEXT,
    error TEXT,
    attempts INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS jobs_created ON jobs (created_at);
CREATE TABLE IF NOT EXISTS idempotency (
    key TEXT PRIMARY KEY,
    job_id TEXT NOT NULL,
    digest TEXT NOT NULL,
    created_at REAL NOT NULL
);
"""
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


class JobStore:
    """Thread-safe access to the jobs table and the audio folder (one connection, one lock)."""

    def __init__(self, data_dir: Path, max_attempts: int = DEFAULT_MAX_ATTEMPTS) -> None:
        self.data_dir = Path(data_dir)
        self.audio_dir = self.data_dir / "audio"
        self.audio_dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(
            self.data_dir / "tunesmith.db", check_same_thread=False, isolation_level=None
        )
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)
        columns = {row["name"] for row in self._db.execute("PRAGMA table_info(jobs)")}
        if "attempts" not in columns:  # a data folder from before attempts were counted
            self._db.execute("ALTER TABLE jobs ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0")
        self.recovered = self._recover(max_attempts)

    def _recover(self, max_attempts: int) -> tuple[int, int]:
        """Put the jobs a previous process was running back in the queue, or fail those that
        have been started `max_attempts` times; drop temp files. (re-queued, failed)."""
        for tmp in self.audio_dir.glob(".tunesmith-*"):
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

    def queued(self) -> list[tuple[str, GenerationRequest]]:
        """The queued jobs, oldest first (what a starting worker takes up)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, params FROM jobs WHERE status='queued' ORDER BY created_at, rowid"
            ).fetchall()
        return [(r["id"], GenerationRequest.model_validate_json(r["params"])) for r in rows]

    def requeue(self, job_ids: list[str]) -> None:
        """Running jobs a stopping server gave up on go back to the queue (not their fault:
        the attempt is not counted)."""
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

    # --- writes -----------------------------------------------------------------------------

    def insert(
        self,
        job_id: str,
        params: GenerationRequest,
        created_at: float,
        idempotency: tuple[str | None, str] | None = None,
    ) -> None:
        """A new queued job; with (Idempotency-Key, request digest), the key is kept with it
        in the same transaction."""
        with self._lock, self._db:
            self._db.execute("BEGIN")
            self._db.execute(
                "INSERT INTO jobs (id, status, params, created_at) VALUES (?, 'queued', ?, ?)",
                (job_id, params.model_dump_json(), created_at),
            )
            if idempotency is not None and idempotency[0] is not None:
                self._db.execute(
                    "INSERT INTO idempotency (key, job_id, digest, created_at) VALUES (?, ?, ?, ?)",
                    (idempotency[0], job_id, idempotency[1], created_at),
                )

    def idempotent(self, key: str) -> tuple[str, str] | None:
        """(job id, request digest) an Idempotency-Key was first used for."""
        with self._lock:
            row = self._db.execute(
                "SELECT job_id, digest FROM idempotency WHERE key=?", (key,)
            ).fetchone()
        return None if row is None else (row["job_id"], row["digest"])

    def mark_running(self, job_ids: list[str], started_at: float, steps_total: int) -> None:
        with self._lock:
            self._db.executemany(
                "UPDATE jobs SET status='running', started_at=?, steps_total=?, batch_size=?, "
                "attempts=attempts + 1 WHERE id=? AND status='queued'",
                [(started_at, steps_total, len(job_ids), i) for i in job_ids],
            )

    def mark_done(
        self, job_id: str, audio_file: str, audio_seconds: float, peaks: list[float], steps: int
    ) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE jobs SET status='done', finished_at=?, audio_file=?, audio_seconds=?, "
                "peaks=?, steps_done=?, steps_total=? WHERE id=?",
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
        """Remove a finished job and its audio file, at once (of several callers, one is told
        it deleted the job); False if there is no such finished job."""
        with self._lock:
            row = self._db.execute(
                "DELETE FROM jobs WHERE id=? AND status IN ('done', 'failed', 'cancelled', "
                "'interrupted') RETURNING audio_file",
                (job_id,),
            ).fetchone()
            self._db.execute("DELETE FROM idempotency WHERE job_id=?", (job_id,))
        if row is None:
            return False
        if row["audio_file"]:
            (self.audio_dir / row["audio_file"]).unlink(missing_ok=True)
        return True

    # --- reads ------------------------------------------------------------------------------

    def get(self, job_id: str) -> JobRecord | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM jobs WHERE id=?", (job_id,)).fetchone()
        return None if row is None else _record(row)

    def peaks(self, job_id: str) -> list[float] | None:
        with self._lock:
            row = self._db.execute("SELECT peaks FROM jobs WHERE id=?", (job_id,)).fetchone()
        return None if row is None or row["peaks"] is None else json.loads(row["peaks"])

    def expired(self, older_than: float | None, max_audio_bytes: int | None) -> list[str]:
        """Finished jobs retention removes: finished before `older_than` (a time), then the
        oldest finished others while their audio files together pass `max_audio_bytes`."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, finished_at, audio_file FROM jobs WHERE status IN ('done', 'failed', "
                "'cancelled', 'interrupted') ORDER BY finished_at, rowid"
            ).fetchall()
        gone = [
            r["id"] for r in rows if older_than is not None and (r["finished_at"] or 0) < older_than
        ]
        if max_audio_bytes is not None:
            sizes = {}
            for r in rows:
                path = self.audio_dir / r["audio_file"] if r["audio_file"] else None
                sizes[r["id"]] = path.stat().st_size if path is not None and path.is_file() else 0
            total = sum(size for job, size in sizes.items() if job not in gone)
            for r in rows:
                if total <= max_audio_bytes:
                    break
                if r["id"] not in gone:
                    gone.append(r["id"])
                    total -= sizes[r["id"]]
        return gone

    def counts(self) -> dict[str, int]:
        """How many jobs the store holds in each status."""
        with self._lock:
            rows = self._db.execute("SELECT status, COUNT(*) AS n FROM jobs GROUP BY status")
            return {row["status"]: int(row["n"]) for row in rows.fetchall()}

    def list(
        self, limit: int, offset: int, status: str | None = None
    ) -> tuple[list[JobRecord], int]:
        """A page of jobs, newest first, and how many match in all."""
        where, args = ("WHERE status=?", [status]) if status else ("", [])
        with self._lock:
            total = self._db.execute(f"SELECT COUNT(*) FROM jobs {where}", args).fetchone()[0]
            rows = self._db.execute(
                f"SELECT * FROM jobs {where} ORDER BY created_at DESC, rowid DESC LIMIT ? OFFSET ?",
                [*args, limit, offset],
            ).fetchall()
        return [_record(r) for r in rows], int(total)


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
    )

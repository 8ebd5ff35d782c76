"""The jobs database's layout, versioned (SQLite's `PRAGMA user_version`), and the steps that
bring a data folder written by an older tunesmith up to it.

A new folder gets the newest layout at once; an older one runs each missing step in order,
each in its own transaction, so a crash between steps leaves a folder the next start
finishes. Folders from before versions were kept read as version 0.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

LATEST = 2
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
    attempts INTEGER NOT NULL DEFAULT 0,
    owner TEXT
);
CREATE INDEX IF NOT EXISTS jobs_created ON jobs (created_at);
CREATE INDEX IF NOT EXISTS jobs_owner ON jobs (owner, created_at);
CREATE TABLE IF NOT EXISTS idempotency (
    owner TEXT NOT NULL DEFAULT '',
    key TEXT NOT NULL,
    job_id TEXT NOT NULL,
    digest TEXT NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (owner, key)
);
CREATE TABLE IF NOT EXISTS uploads (
    id TEXT PRIMARY KEY,
    owner TEXT,
    created_at REAL NOT NULL,
    seconds REAL NOT NULL,
    sample_rate INTEGER NOT NULL,
    channels INTEGER NOT NULL,
    bytes INTEGER NOT NULL
);
"""


def migrate(db: sqlite3.Connection, data_dir: Path) -> int:
    """Bring the database to LATEST; the version it was at (LATEST for a new folder)."""
    found = int(db.execute("PRAGMA user_version").fetchone()[0])
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if "jobs" not in tables:
        db.executescript(SCHEMA)
        db.execute(f"PRAGMA user_version={LATEST}")
        return LATEST
    for version in range(found + 1, LATEST + 1):
        db.execute("BEGIN")
        try:
            STEPS[version](db, data_dir)
            db.execute(f"PRAGMA user_version={version}")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
    return found


def _columns(db: sqlite3.Connection, table: str) -> set[str]:
    return {row[1] for row in db.execute(f"PRAGMA table_info({table})")}


def _v1_attempts(db: sqlite3.Connection, data_dir: Path) -> None:
    """Starts of a job across crashes (added in place before versions were kept)."""
    if "attempts" not in _columns(db, "jobs"):
        db.execute("ALTER TABLE jobs ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0")


def _v2_owners(db: sqlite3.Connection, data_dir: Path) -> None:
    """Each job and upload belongs to the API key that made it (NULL: made without one,
    seen by admin keys only); Idempotency-Keys are one caller's own; uploads get a table,
    and the files an older server kept are entered in it."""
    if "owner" not in _columns(db, "jobs"):
        db.execute("ALTER TABLE jobs ADD COLUMN owner TEXT")
    db.execute("CREATE INDEX IF NOT EXISTS jobs_owner ON jobs (owner, created_at)")
    if "owner" not in _columns(db, "idempotency"):
        db.execute("ALTER TABLE idempotency RENAME TO idempotency_v1")
        db.execute(
            "CREATE TABLE idempotency (owner TEXT NOT NULL DEFAULT '', key TEXT NOT NULL, "
            "job_id TEXT NOT NULL, digest TEXT NOT NULL, created_at REAL NOT NULL, "
            "PRIMARY KEY (owner, key))"
        )
        db.execute(
            "INSERT INTO idempotency (owner, key, job_id, digest, created_at) "
            "SELECT '', key, job_id, digest, created_at FROM idempotency_v1"
        )
        db.execute("DROP TABLE idempotency_v1")
    db.execute(
        "CREATE TABLE IF NOT EXISTS uploads (id TEXT PRIMARY KEY, owner TEXT, "
        "created_at REAL NOT NULL, seconds REAL NOT NULL, sample_rate INTEGER NOT NULL, "
        "channels INTEGER NOT NULL, bytes INTEGER NOT NULL)"
    )
    folder = data_dir / "uploads"
    for path in sorted(folder.iterdir()) if folder.is_dir() else []:
        if len(path.name) != 32 or not path.is_file():
            continue
        info = _sound_info(path)
        if info is None:
            continue  # unreadable: a job could not have used it either
        db.execute(
            "INSERT OR IGNORE INTO uploads (id, owner, created_at, seconds, sample_rate, "
            "channels, bytes) VALUES (?, NULL, ?, ?, ?, ?, ?)",
            (path.name, path.stat().st_mtime or time.time(), *info, path.stat().st_size),
        )


def _sound_info(path: Path) -> tuple[float, int, int] | None:
    import soundfile

    try:
        info = soundfile.info(str(path))
    except (RuntimeError, soundfile.LibsndfileError):
        return None
    return round(info.frames / info.samplerate, 3), int(info.samplerate), int(info.channels)


STEPS: dict[int, Callable[[sqlite3.Connection, Path], None]] = {1: _v1_attempts, 2: _v2_owners}

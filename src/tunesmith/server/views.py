"""A job as the API shows it: the stored row, with what only the worker knows yet laid over
it (live progress, an outcome the full disk has not let the store take), and no path of the
server in any message."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timezone

from . import audiofiles
from .schemas import Generation, Progress, Timings
from .state import ServerState
from .store import JobRecord


def view(state: ServerState, r: JobRecord) -> Generation:
    worker = state.worker
    held = worker.outcome(r.id)  # ended, but the disk has not taken the record yet
    if held is not None:
        r = dataclasses.replace(r, status=held[0], error=held[1])
    else:
        live = worker.live_status(r.id)  # the store lags when the disk refused its write
        if live is not None and live != r.status:
            r = dataclasses.replace(r, status=live)
    return Generation(
        id=r.id,
        status=r.status,  # type: ignore[arg-type]  # the store only writes valid states
        progress=progress(state, r),
        parameters=r.params,
        timings=Timings(
            created_at=_iso(r.created_at),
            started_at=_iso_or_none(r.started_at),
            finished_at=_iso_or_none(r.finished_at),
            wait_seconds=_span(r.created_at, r.started_at),
            run_seconds=_span(r.started_at, r.finished_at),
        ),
        batch_size=r.batch_size,
        error=None if r.error is None else state.without_paths(r.error),
        audio_url=f"/v1/generations/{r.id}/audio" if r.status == "done" else None,
        stream_url=f"/v1/generations/{r.id}/stream",
        audio_seconds=r.audio_seconds,
        media_type=audiofiles.MEDIA_TYPES[r.params.format],
    )


def progress(state: ServerState, r: JobRecord) -> Progress:
    """Steps, the seconds of music they stand for, and (running) the time left at the pace
    the job has run so far."""
    done, total = r.steps_done, r.steps_total
    live = state.worker.progress(r.id) if r.status == "running" else None
    if live is not None:
        done, total = live
    asked = float(r.params.duration)
    made = asked if r.status == "done" else asked * done / total if total else 0.0
    left = None
    elapsed = state.worker.running_for(r.id) if live is not None else None
    if elapsed is not None and done > 0 and total >= done:
        left = round((total - done) * elapsed / done, 1)
    return Progress(
        steps_done=done, steps_total=total, seconds_done=round(made, 2), seconds_total=asked,
        seconds_left=left,
    )  # fmt: skip


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).isoformat()


def _iso_or_none(t: float | None) -> str | None:
    return None if t is None else _iso(t)


def _span(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else round(b - a, 3)

"""The `/v1/generations` endpoints: thin handlers over the job store and the worker."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import shutil
import sqlite3
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, StreamingResponse
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from starlette.background import BackgroundTask

from . import audiofiles
from .schemas import (
    AudioFormat,
    ErrorBody,
    Generation,
    GenerationList,
    GenerationRequest,
    Peaks,
    Status,
    Timings,
)
from .schemas import Progress as ProgressModel
from .store import JobRecord, JobStore
from .streams import StreamHub
from .upload_files import describe, upload_path
from .worker import NotAcceptingError, QueueFullError, StorageError, Worker

if TYPE_CHECKING:
    from ..musicgen import MusicGen

MAX_OFFSET = 10**12  # past any real table; SQLite's integers end at 2**63 - 1


@dataclass
class ServerState:
    """What every handler needs, kept on `app.state.tunesmith`."""

    model: MusicGen
    store: JobStore
    worker: Worker
    hub: StreamHub
    api_key: str | None
    min_free_bytes: int = 0  # below this free space in the data folder, no new jobs
    auth_delay_step: float = 0.1  # seconds more per recent failed authentication
    failed_auth: dict[str, tuple[int, float]] = dataclasses.field(default_factory=dict)
    auth_lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)

    def auth_delay(self, client: str) -> float:
        """Seconds to hold a failed authentication from `client`: `auth_delay_step` more for
        each recent failure (forgotten after a quiet minute), at most 2 s. Guessing keys gets
        slow."""
        now = time.monotonic()
        with self.auth_lock:
            count, last = self.failed_auth.get(client, (0, now))
            count = 1 if now - last > 60 else count + 1
            self.failed_auth[client] = (count, now)
            if len(self.failed_auth) > 10_000:  # bounded memory under a spray of addresses
                self.failed_auth.clear()
        return min(2.0, self.auth_delay_step * count)

    def low_disk(self) -> str | None:
        """Why the data folder's disk takes no new job (None: it has room)."""
        if shutil.disk_usage(self.store.data_dir).free < self.min_free_bytes:
            return (
                f"the data folder's disk has under {self.min_free_bytes // 2**20} MiB free; "
                "no new jobs until space is freed"
            )
        return None

    def not_ready(self) -> str | None:
        """Why the server cannot take a job now (None: it can)."""
        if not self.worker.alive:
            return "the server's worker is not running (stopping, or failed)"
        return self.low_disk()


def get_state(request: Request) -> ServerState:
    state: ServerState = request.app.state.tunesmith
    return state


_bearer = HTTPBearer(auto_error=False, description="`Authorization: Bearer KEY`")
_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="`X-API-Key: KEY`")


def require_key(
    request: Request,
    state: ServerState = Depends(get_state),
    bearer: HTTPAuthorizationCredentials | None = Depends(_bearer),
    header: str | None = Depends(_header),
) -> None:
    """Pass when the server has no key, or the request carries it, in either header; a
    request that sends both must send it in both (a wrong credential is never outweighed)."""
    if state.api_key is None:
        return
    given = [
        c for c in (header, bearer.credentials if bearer is not None else None) if c is not None
    ]
    if "authorization" in request.headers and bearer is None:
        given.append("")  # an Authorization of another scheme (Basic, ...): a wrong credential
    want = state.api_key.encode()
    if not given or not all(hmac.compare_digest(c.encode(), want) for c in given):
        time.sleep(state.auth_delay(request.client.host if request.client else "?"))
        raise HTTPException(
            401,
            "missing or wrong API key: send `Authorization: Bearer KEY` or `X-API-Key: KEY`",
            headers={"WWW-Authenticate": "Bearer"},
        )


_errors: dict[int | str, dict[str, object]] = {
    code: {"model": ErrorBody} for code in (400, 401, 404, 409, 413, 422, 429)
}
_errors[400]["description"] = "The body is not valid JSON (or not UTF-8)."
_busy: dict[int | str, dict[str, object]] = {
    503: {"model": ErrorBody, "description": "Stopping, or the worker is not running."},
    507: {"model": ErrorBody, "description": "The data folder's disk is (nearly) full."},
}
router = APIRouter(
    prefix="/v1/generations",
    tags=["generations"],
    dependencies=[Depends(require_key)],
    responses=_errors,
)


@router.post("", status_code=202, response_model=Generation, responses=_busy)
def create_generation(
    body: GenerationRequest,
    response: Response,
    idempotency_key: str | None = Header(
        None,
        max_length=200,
        description="A retried POST with the same key (and body) returns the same job.",
    ),
    state: ServerState = Depends(get_state),
) -> Generation:
    """Queue a generation; poll `GET /v1/generations/{id}` or listen on its `stream_url`."""
    digest = hashlib.sha256(body.model_dump_json().encode()).hexdigest()
    earlier = _replayed(state, idempotency_key, digest, response)
    if earlier is not None:
        return earlier
    _check_uploads(state, body)
    reason = audiofiles.unavailable_reason(body.format)
    if reason is not None:
        raise HTTPException(422, f"format: {reason}")
    low_disk = state.low_disk()
    if low_disk is not None:
        raise HTTPException(507, low_disk)
    try:
        job_id = state.worker.submit(body, idempotency=(idempotency_key, digest))
    except QueueFullError as err:
        raise HTTPException(429, str(err), headers={"Retry-After": str(err.retry_after)}) from None
    except NotAcceptingError as err:
        raise HTTPException(503, f"{err}; try again later", headers={"Retry-After": "5"}) from None
    except StorageError:
        raise HTTPException(507, "the job could not be recorded: the disk is full") from None
    except sqlite3.IntegrityError:  # the same key in a simultaneous POST: that one's job
        earlier = _replayed(state, idempotency_key, digest, response)
        if earlier is None:
            raise
        return earlier
    response.headers["Location"] = f"/v1/generations/{job_id}"
    return _view(state, _get(state, job_id))


@router.get("", response_model=GenerationList)
def list_generations(
    limit: int = Query(20, ge=1, le=100),
    offset: int = Query(0, ge=0, le=MAX_OFFSET),
    status: Status | None = Query(None, description="Only jobs in this state."),
    state: ServerState = Depends(get_state),
) -> GenerationList:
    """Jobs, newest first."""
    records, total = state.store.list(limit, offset, status)
    items = [_view(state, r) for r in records]
    return GenerationList(items=items, total=total, limit=limit, offset=offset)


@router.get("/{job_id}", response_model=Generation)
def get_generation(job_id: str, state: ServerState = Depends(get_state)) -> Generation:
    """Status, progress, settings, timings and error of one job."""
    return _view(state, _get(state, job_id))


@router.get(
    "/{job_id}/audio",
    response_class=FileResponse,
    responses={200: {"content": {t: {} for t in audiofiles.MEDIA_TYPES.values()}}},
)
def get_audio(
    job_id: str,
    format: AudioFormat | None = Query(
        None, description="Another format than the job's (converted from its file)."
    ),
    state: ServerState = Depends(get_state),
) -> FileResponse:
    """The finished audio file, in the format the job asked for or in `format`."""
    record = _get(state, job_id)
    if format is None or format == record.params.format:
        return _file(state, record)
    reason = audiofiles.unavailable_reason(format)
    if reason is not None:
        raise HTTPException(422, f"format: {reason}")
    source = _file(state, record).path
    converted = audiofiles.convert(Path(source), format, state.store.audio_dir)
    return FileResponse(
        converted,
        media_type=audiofiles.MEDIA_TYPES[format],
        filename=audiofiles.download_name(record.params.prompt, record.id, format),
        content_disposition_type="inline",
        background=BackgroundTask(converted.unlink, missing_ok=True),
    )


@router.get(
    "/{job_id}/spectrogram",
    response_class=Response,
    responses={
        200: {"content": {"image/png": {}}},
        501: {"model": ErrorBody, "description": "The server lacks matplotlib."},
    },
)
def get_spectrogram(job_id: str, state: ServerState = Depends(get_state)) -> Response:
    """A spectrogram picture (PNG) of the finished audio."""
    source = Path(_file(state, _get(state, job_id)).path)
    try:
        png = audiofiles.spectrogram_png(source)
    except ImportError:
        raise HTTPException(501, "spectrograms need matplotlib on the server") from None
    return Response(png, media_type="image/png", headers={"Cache-Control": "max-age=3600"})


@router.get("/{job_id}/peaks", response_model=Peaks)
def get_peaks(job_id: str, state: ServerState = Depends(get_state)) -> Peaks:
    """Peak levels of the finished audio, for a waveform picture."""
    record = _get(state, job_id)
    peaks = state.store.peaks(job_id)
    if record.status != "done" or peaks is None:
        raise HTTPException(409, f"generation {job_id} is {record.status}: it has no audio")
    return Peaks(id=job_id, peaks=peaks)


@router.get(
    "/{job_id}/stream",
    response_class=StreamingResponse,
    responses={200: {"content": {t: {} for t in audiofiles.MEDIA_TYPES.values()},
                     "description": "A live job: WAV as it is made. A finished one: its file."}},
)  # fmt: skip
async def stream_generation(job_id: str, state: ServerState = Depends(get_state)) -> Response:
    """Audio while it is made: a 16-bit WAV of unknown length, sent chunk by chunk from when
    the job starts until it ends. A finished job answers with its file, as `/audio` does."""
    record = await run_in_threadpool(_get, state, job_id)
    live = record.status in ("queued", "running")
    queue = state.hub.subscribe(job_id) if live else None
    if queue is None:
        if live:  # it ended between the two looks: answer as for a finished job
            record = await run_in_threadpool(_get, state, job_id)
        return _file(state, record)

    async def body() -> AsyncIterator[bytes]:
        try:
            yield audiofiles.wav_stream_header(state.model.sample_rate, state.model.audio_channels)
            while (chunk := await queue.get()) is not None:
                yield audiofiles.pcm16(chunk)
        finally:
            state.hub.unsubscribe(job_id, queue)

    headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    return StreamingResponse(body(), media_type="audio/wav", headers=headers)


@router.delete(
    "/{job_id}",
    response_model=Generation,
    responses={
        204: {"description": "A finished job and its audio were deleted."},
        409: {"model": ErrorBody, "description": "The job is still ending; try again."},
    },
)
def delete_generation(
    job_id: str, state: ServerState = Depends(get_state)
) -> Response | Generation:
    """Cancel a queued or running job (200, the job now `cancelled`), or delete a finished one
    with its audio (204)."""
    _get(state, job_id)
    if state.worker.cancel(job_id):
        return _view(state, _get(state, job_id))
    if state.worker.busy(job_id):  # cancelled, its batch not ended yet: the row must stay
        raise HTTPException(409, f"generation {job_id} is being cancelled; delete it once it ends")
    if not state.store.delete(job_id):  # another request deleted it first
        raise HTTPException(404, f"no generation with id {job_id!r}")
    return Response(status_code=204)


# --- helpers --------------------------------------------------------------------------------


def _check_uploads(state: ServerState, body: GenerationRequest) -> None:
    """The uploads a request names exist and suit the model, as the CLI checks its files."""
    window = state.model.max_duration
    if body.audio_prompt is not None:
        path = upload_path(state.store.data_dir, body.audio_prompt)
        if path is None:
            raise HTTPException(404, f"audio_prompt: no upload with id {body.audio_prompt!r}")
        seconds = describe(path, body.audio_prompt).seconds
        if seconds >= window:
            raise HTTPException(
                422, f"audio_prompt: the upload is {seconds:.2f}s; it must be shorter than the "
                f"model's {window:g}s window",
            )  # fmt: skip
    if body.melody is not None:
        if upload_path(state.store.data_dir, body.melody) is None:
            raise HTTPException(404, f"melody: no upload with id {body.melody!r}")
        if state.model.config.melody is None:
            raise HTTPException(
                422, "melody: this server's model is conditioned on text only; a melody needs "
                "a melody checkpoint",
            )  # fmt: skip


def _replayed(
    state: ServerState, key: str | None, digest: str, response: Response
) -> Generation | None:
    """The job an Idempotency-Key was first used for (None: a new key)."""
    if key is None:
        return None
    earlier = state.store.idempotent(key)
    if earlier is None:
        return None
    job_id, earlier_digest = earlier
    if earlier_digest != digest:
        raise HTTPException(409, "Idempotency-Key was used before with another request body")
    record = state.store.get(job_id)
    if record is None:
        return None
    response.headers["Location"] = f"/v1/generations/{job_id}"
    return _view(state, record)


def _get(state: ServerState, job_id: str) -> JobRecord:
    record = state.store.get(job_id)
    if record is None:
        raise HTTPException(404, f"no generation with id {job_id!r}")
    return record


def _file(state: ServerState, record: JobRecord) -> FileResponse:
    if record.status != "done":
        hint = "; wait until it is done, or listen on /stream" if record.status in (
            "queued", "running") else ""  # fmt: skip
        raise HTTPException(409, f"generation {record.id} is {record.status}: no audio{hint}")
    path = state.store.audio_path(record)
    if path is None:
        raise HTTPException(404, f"the audio file of generation {record.id} is missing on disk")
    fmt = record.params.format
    return FileResponse(
        path,
        media_type=audiofiles.MEDIA_TYPES[fmt],
        filename=audiofiles.download_name(record.params.prompt, record.id, fmt),
        content_disposition_type="inline",
    )


def _view(state: ServerState, r: JobRecord) -> Generation:
    held = state.worker.outcome(r.id)  # ended, but the disk has not taken the record yet
    if held is not None:
        r = dataclasses.replace(r, status=held[0], error=held[1])
    done, total = r.steps_done, r.steps_total
    live = state.worker.progress(r.id) if r.status == "running" else None
    if live is not None:
        done, total = live
    return Generation(
        id=r.id,
        status=r.status,  # type: ignore[arg-type]  # the store only writes valid states
        progress=ProgressModel(steps_done=done, steps_total=total),
        parameters=r.params,
        timings=Timings(
            created_at=_iso(r.created_at),
            started_at=_iso_or_none(r.started_at),
            finished_at=_iso_or_none(r.finished_at),
            wait_seconds=_span(r.created_at, r.started_at),
            run_seconds=_span(r.started_at, r.finished_at),
        ),
        batch_size=r.batch_size,
        error=r.error,
        audio_url=f"/v1/generations/{r.id}/audio" if r.status == "done" else None,
        stream_url=f"/v1/generations/{r.id}/stream",
        audio_seconds=r.audio_seconds,
        media_type=audiofiles.MEDIA_TYPES[r.params.format],
    )


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).isoformat()


def _iso_or_none(t: float | None) -> str | None:
    return None if t is None else _iso(t)


def _span(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else round(b - a, 3)

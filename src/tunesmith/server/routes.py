"""The `/v1/generations` endpoints: thin handlers over the job store and the worker.

A key sees only the jobs it made (another key's id answers 404, as a missing one does); an
admin key, or anyone on a server without keys, sees all.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

from fastapi import APIRouter, Depends, Header, HTTPException, Query, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, StreamingResponse
from starlette.background import BackgroundTask

from . import audiofiles, pictures
from .auth import Caller, caller
from .disk import is_full
from .refusals import NotAcceptingError, QueueFullError, StorageError
from .schemas import (
    AudioFormat,
    ErrorBody,
    Generation,
    GenerationList,
    GenerationRequest,
    Peaks,
    Status,
)
from .state import ServerState, get_state
from .store import JobRecord, StoreFullError
from .views import view

MAX_OFFSET = 10**12  # past any real table; SQLite's integers end at 2**63 - 1
FULL_DISK = "the data folder's disk is full; free some space (DELETE old jobs) and try again"

_errors: dict[int | str, dict[str, object]] = {
    code: {"model": ErrorBody} for code in (401, 404, 409, 413, 422, 429)
}
_errors[400] = {"model": ErrorBody, "description": "The body is not JSON (or not UTF-8)."}
_errors[403] = {"model": ErrorBody, "description": "A cross-site request (another Origin)."}
_busy: dict[int | str, dict[str, object]] = {
    503: {"model": ErrorBody, "description": "Stopping, or the worker is not running."},
    507: {"model": ErrorBody, "description": "The data folder's disk is (nearly) full."},
}
_id = {"job_id": "$response.body#/id"}
_links = {
    name: {"operationId": operation, "parameters": _id}
    for name, operation in (
        ("GetGeneration", "get_generation"), ("GetAudio", "get_audio"),
        ("GetPeaks", "get_peaks"), ("GetSpectrogram", "get_spectrogram"),
        ("DeleteGeneration", "delete_generation"),
        # (no link to /stream: a queued job's stream lasts until the job has run)
    )
}  # fmt: skip
router = APIRouter(
    prefix="/v1/generations",
    tags=["generations"],
    dependencies=[Depends(caller)],
    responses=_errors,
)


@router.post(
    "", status_code=202, response_model=Generation, operation_id="create_generation",
    responses={**_busy, 202: {"links": _links}},
)  # fmt: skip
def create_generation(
    body: GenerationRequest,
    response: Response,
    idempotency_key: str | None = Header(
        None,
        min_length=1,
        max_length=200,
        description="A retried POST with the same key (and body) returns the same job; each "
        "API key has its own. Not empty.",
    ),
    who: Caller = Depends(caller),
    state: ServerState = Depends(get_state),
) -> Generation:
    """Queue a generation; poll `GET /v1/generations/{id}` or listen on its `stream_url`."""
    digest = hashlib.sha256(body.model_dump_json().encode()).hexdigest()
    earlier = _replayed(state, who, idempotency_key, digest, response)
    if earlier is not None:
        return earlier
    _check_uploads(state, who, body)
    reason = audiofiles.unavailable_reason(body.format)
    if reason is not None:
        raise HTTPException(422, f"format: {reason}")
    low_disk = state.disk.low()
    if low_disk is not None:
        raise HTTPException(507, low_disk)
    try:
        job_id = state.worker.submit(body, (idempotency_key, digest), owner=who.name)
    except QueueFullError as err:
        raise HTTPException(429, str(err), headers={"Retry-After": str(err.retry_after)}) from None
    except NotAcceptingError as err:
        raise HTTPException(503, f"{err}; try again later", headers={"Retry-After": "5"}) from None
    except StorageError:
        raise HTTPException(507, "the job could not be recorded: the disk is full") from None
    except sqlite3.IntegrityError:  # the same key in a simultaneous POST: that one's job
        earlier = _replayed(state, who, idempotency_key, digest, response)
        if earlier is None:
            raise
        return earlier
    response.headers["Location"] = f"/v1/generations/{job_id}"
    return view(state, _get(state, who, job_id))


@router.get("", response_model=GenerationList, operation_id="list_generations")
def list_generations(
    limit: int = Query(20, ge=1, le=100),
    offset: int = Query(0, ge=0, le=MAX_OFFSET),
    status: Status | None = Query(None, description="Only jobs in this state."),
    who: Caller = Depends(caller),
    state: ServerState = Depends(get_state),
) -> GenerationList:
    """The caller's jobs (an admin key's: all), newest first."""
    records, total = state.store.list(limit, offset, status, who.visible_to)
    items = [view(state, r) for r in records]
    return GenerationList(items=items, total=total, limit=limit, offset=offset)


@router.get("/{job_id}", response_model=Generation, operation_id="get_generation")
def get_generation(
    job_id: str, who: Caller = Depends(caller), state: ServerState = Depends(get_state)
) -> Generation:
    """Status, progress, settings, timings and error of one job."""
    return view(state, _get(state, who, job_id))


@router.get(
    "/{job_id}/audio",
    response_class=FileResponse,
    operation_id="get_audio",
    responses={
        200: {"content": {t: {} for t in audiofiles.MEDIA_TYPES.values()}},
        507: _busy[507],
    },
)
def get_audio(
    job_id: str,
    format: AudioFormat | None = Query(
        None, description="Another format than the job's (converted from its file)."
    ),
    who: Caller = Depends(caller),
    state: ServerState = Depends(get_state),
) -> FileResponse:
    """The finished audio file, in the format the job asked for or in `format`."""
    record = _get(state, who, job_id)
    if format is None or format == record.params.format:
        return _file(state, record)
    reason = audiofiles.unavailable_reason(format)
    if reason is not None:
        raise HTTPException(422, f"format: {reason}")
    source = _file(state, record).path
    low = state.disk.low()
    if low is not None:
        raise HTTPException(507, f"no room to convert: {low}")
    try:
        converted = audiofiles.convert(Path(source), format, state.store.audio_dir)
    except Exception as err:  # a disk that filled while converting is a 507, not bad input
        if is_full(err) or state.disk.short_of(Path(source).stat().st_size * 2):
            raise HTTPException(507, FULL_DISK) from None
        raise
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
    operation_id="get_spectrogram",
    responses={
        200: {"content": {"image/png": {}}},
        501: {"model": ErrorBody, "description": "The server lacks matplotlib."},
    },
)
def get_spectrogram(
    job_id: str, who: Caller = Depends(caller), state: ServerState = Depends(get_state)
) -> Response:
    """A spectrogram picture (PNG) of the finished audio, drawn once and kept."""
    record = _get(state, who, job_id)
    source = Path(_file(state, record).path)
    try:
        png = pictures.spectrogram_png(source, state.store.picture_path(record.id))
    except ImportError:
        raise HTTPException(501, "spectrograms need matplotlib on the server") from None
    if state.store.get(record.id) is None:  # deleted while drawn: keep nothing of it
        state.store.picture_path(record.id).unlink(missing_ok=True)
    return Response(png, media_type="image/png", headers={"Cache-Control": "max-age=3600"})


@router.get("/{job_id}/peaks", response_model=Peaks, operation_id="get_peaks")
def get_peaks(
    job_id: str, who: Caller = Depends(caller), state: ServerState = Depends(get_state)
) -> Peaks:
    """Peak levels of the finished audio, for a waveform picture."""
    record = _get(state, who, job_id)
    peaks = state.store.peaks(job_id)
    if record.status != "done" or peaks is None:
        raise HTTPException(409, f"generation {job_id} is {record.status}: it has no audio")
    return Peaks(id=job_id, peaks=peaks)


@router.get(
    "/{job_id}/stream",
    response_class=StreamingResponse,
    operation_id="stream_generation",
    responses={200: {"content": {t: {} for t in audiofiles.MEDIA_TYPES.values()},
                     "description": "A live job: WAV as it is made. A finished one: its file."}},
)  # fmt: skip
async def stream_generation(
    job_id: str, who: Caller = Depends(caller), state: ServerState = Depends(get_state)
) -> Response:
    """Audio while it is made: a 16-bit WAV of unknown length, sent chunk by chunk from when
    the job starts until it ends, at the model's own level (the file is levelled as the
    request asks, which needs the whole piece). A finished job answers with its file."""
    record = await run_in_threadpool(_get, state, who, job_id)
    live = record.status in ("queued", "running")
    queue = state.hub.subscribe(job_id) if live else None
    if queue is None:
        if live:  # it ended between the two looks: answer as for a finished job
            record = await run_in_threadpool(_get, state, who, job_id)
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
    operation_id="delete_generation",
    responses={
        204: {"description": "A finished job and its audio were deleted."},
        409: {"model": ErrorBody, "description": "The job is still ending; try again."},
        507: {"model": ErrorBody, "description": "The disk is too full even to delete."},
    },
)
def delete_generation(
    job_id: str, who: Caller = Depends(caller), state: ServerState = Depends(get_state)
) -> Response | Generation:
    """Cancel a queued or running job (200, the job now `cancelled`), or delete a finished one
    with its audio (204). Works on a full disk: it is how space is freed."""
    _get(state, who, job_id)
    if state.worker.cancel(job_id):
        return view(state, _get(state, who, job_id))
    if state.worker.busy(job_id):  # cancelled, its batch not ended yet: the row must stay
        raise HTTPException(409, f"generation {job_id} is being cancelled; delete it once it ends")
    try:
        gone = state.store.delete(job_id)
    except StoreFullError as err:
        raise HTTPException(507, str(err)) from None
    if not gone:  # another request deleted it first
        raise HTTPException(404, f"no generation with id {job_id!r}")
    return Response(status_code=204)


# --- helpers --------------------------------------------------------------------------------


def _check_uploads(state: ServerState, who: Caller, body: GenerationRequest) -> None:
    """The uploads a request names exist, are the caller's, and suit the model, as the CLI
    checks its files."""
    window = state.model.max_duration
    for field, upload_id in (("audio_prompt", body.audio_prompt), ("melody", body.melody)):
        if upload_id is None:
            continue
        upload = state.store.upload(upload_id, who.visible_to)
        if upload is None:
            raise HTTPException(404, f"{field}: no upload with id {upload_id!r}")
        if field == "audio_prompt" and upload.seconds >= window:
            raise HTTPException(
                422, f"audio_prompt: the upload is {upload.seconds:.2f}s; it must be shorter "
                f"than the model's {window:g}s window",
            )  # fmt: skip
        if field == "melody" and state.model.config.melody is None:
            raise HTTPException(
                422, "melody: this server's model is conditioned on text only; a melody needs "
                "a melody checkpoint",
            )  # fmt: skip


def _replayed(
    state: ServerState, who: Caller, key: str | None, digest: str, response: Response
) -> Generation | None:
    """The job the caller first used an Idempotency-Key for (None: a new key)."""
    if key is None:
        return None
    earlier = state.store.idempotent(key, who.name)
    if earlier is None:
        return None
    job_id, earlier_digest = earlier
    if earlier_digest != digest:
        raise HTTPException(409, "Idempotency-Key was used before with another request body")
    record = state.store.get(job_id)
    if record is None:
        return None
    response.headers["Location"] = f"/v1/generations/{job_id}"
    return view(state, record)


def _get(state: ServerState, who: Caller, job_id: str) -> JobRecord:
    record = state.store.get(job_id, who.visible_to)
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

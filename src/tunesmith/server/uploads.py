"""`/v1/uploads`: an audio file for a job to continue (`audio_prompt`) or follow (`melody`),
sent as the raw request body in any format the CLI reads. The key is checked before the
body is read; the body goes to disk as it arrives (never whole in memory), is decoded whole,
and is kept under data_dir/uploads/<id> (its own name never reaches the disk). An upload
belongs to the key that sent it, and is deleted with DELETE or by retention."""

from __future__ import annotations

import os
import tempfile
import time
import uuid
from pathlib import Path

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from fastapi.concurrency import run_in_threadpool

from .auth import Caller, caller
from .disk import is_full
from .schemas import ErrorBody, Upload
from .state import ServerState, get_state
from .store import StoreFullError, UploadRecord
from .upload_files import NOT_AUDIO, decode_whole

FULL = "the upload could not be stored: the data folder's disk is full"
MEDIA = ("application/octet-stream", "audio/wav", "audio/flac", "audio/mpeg", "audio/ogg")
_links = {
    "GetUpload": {"operationId": "get_upload", "parameters": {"upload_id": "$response.body#/id"}},
    "DeleteUpload": {
        "operationId": "delete_upload", "parameters": {"upload_id": "$response.body#/id"},
    },
}  # fmt: skip
router = APIRouter(
    prefix="/v1/uploads",
    tags=["uploads"],
    dependencies=[Depends(caller)],
    responses={code: {"model": ErrorBody} for code in (401, 403, 404, 413, 422)},
)


@router.post(
    "",
    status_code=201,
    response_model=Upload,
    operation_id="create_upload",
    responses={
        201: {"links": _links},
        422: {"model": ErrorBody, "description": NOT_AUDIO + "; or an empty body."},
        507: {"model": ErrorBody, "description": "The data folder's disk is (nearly) full."},
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "description": "The audio file itself. Any bytes pass the schema, but only audio "
            "the server decodes whole is kept: other bytes (a PNG, text) answer 422.",
            "content": {t: {"schema": {"type": "string", "format": "binary"}} for t in MEDIA},
        }
    },
)
async def create_upload(
    request: Request, who: Caller = Depends(caller), state: ServerState = Depends(get_state)
) -> Upload:
    """Store an audio file (the raw body) for `audio_prompt` or `melody`; its id."""
    low = state.disk.low()
    if low is not None:
        raise HTTPException(507, low)
    folder = state.store.upload_dir
    fd, name = tempfile.mkstemp(prefix=".tunesmith-upload-", dir=folder)
    tmp = Path(name)
    try:
        size = 0
        with os.fdopen(fd, "wb") as f:
            async for chunk in request.stream():
                f.write(chunk)
                size += len(chunk)
        if size == 0:
            raise HTTPException(422, "the upload is empty: send the audio file as the request body")
        seconds, rate, channels = await run_in_threadpool(decode_whole, tmp)
        upload_id = uuid.uuid4().hex
        os.replace(tmp, folder / upload_id)
        record = UploadRecord(upload_id, who.name, time.time(), seconds, rate, channels, size)
        try:
            state.store.add_upload(record)
        except Exception:
            (folder / upload_id).unlink(missing_ok=True)
            raise
    except Exception as err:
        if isinstance(err, StoreFullError) or is_full(err):
            raise HTTPException(507, FULL) from None
        raise
    finally:
        tmp.unlink(missing_ok=True)
    return Upload(id=upload_id, seconds=seconds, sample_rate=rate, channels=channels)


@router.get("/{upload_id}", response_model=Upload, operation_id="get_upload")
def get_upload(
    upload_id: str, who: Caller = Depends(caller), state: ServerState = Depends(get_state)
) -> Upload:
    """What an upload holds."""
    record = _visible(state, who, upload_id)
    return Upload(
        id=record.id, seconds=record.seconds, sample_rate=record.sample_rate,
        channels=record.channels,
    )  # fmt: skip


@router.delete(
    "/{upload_id}",
    status_code=204,
    response_class=Response,
    operation_id="delete_upload",
    responses={
        204: {"description": "The upload and its file were deleted."},
        409: {"model": ErrorBody, "description": "A queued or running job uses it."},
        507: {"model": ErrorBody, "description": "The disk is too full even to delete."},
    },
)
def delete_upload(
    upload_id: str, who: Caller = Depends(caller), state: ServerState = Depends(get_state)
) -> Response:
    """Delete an upload and its file (refused while a queued or running job uses it)."""
    _visible(state, who, upload_id)
    if state.worker.uses_upload(upload_id):
        raise HTTPException(409, f"upload {upload_id} is used by a queued or running job")
    try:
        gone = state.store.delete_upload(upload_id)
    except StoreFullError as err:
        raise HTTPException(507, str(err)) from None
    if not gone:
        raise HTTPException(404, f"no upload with id {upload_id!r}")
    return Response(status_code=204)


def _visible(state: ServerState, who: Caller, upload_id: str) -> UploadRecord:
    record = state.store.upload(upload_id, who.visible_to)
    if record is None:
        raise HTTPException(404, f"no upload with id {upload_id!r}")
    return record

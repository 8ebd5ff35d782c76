"""`POST /v1/uploads`: an audio file for a job to continue (`audio_prompt`) or follow
(`melody`), sent as the raw request body in any format the CLI reads. Kept under
data_dir/uploads/<id> (its own name never reaches the disk), checked readable at once."""

from __future__ import annotations

import os
import tempfile
import uuid
from pathlib import Path

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.concurrency import run_in_threadpool

from .routes import ServerState, get_state, require_key
from .schemas import ErrorBody, Upload
from .upload_files import describe, upload_folder, upload_path

router = APIRouter(
    prefix="/v1/uploads",
    tags=["uploads"],
    dependencies=[Depends(require_key)],
    responses={code: {"model": ErrorBody} for code in (401, 404, 413, 422, 507)},
)


@router.post(
    "",
    status_code=201,
    response_model=Upload,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                t: {"schema": {"type": "string", "format": "binary"}}
                for t in ("application/octet-stream", "audio/wav", "audio/flac", "audio/mpeg",
                          "audio/ogg")
            },
        }
    },
)  # fmt: skip
async def create_upload(request: Request, state: ServerState = Depends(get_state)) -> Upload:
    """Store an audio file (the raw body) for `audio_prompt` or `melody`; its id."""
    body = await request.body()
    if not body:
        raise HTTPException(422, "the upload is empty: send the audio file as the request body")
    upload_id = uuid.uuid4().hex
    folder = upload_folder(state.store.data_dir)

    def keep() -> Upload:
        fd, tmp = tempfile.mkstemp(prefix=".tunesmith-upload-", dir=folder)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(body)
            info = describe(Path(tmp), upload_id)
            os.replace(tmp, folder / upload_id)
            return info
        except OSError:
            raise HTTPException(507, "the upload could not be stored: the disk is full") from None
        finally:
            Path(tmp).unlink(missing_ok=True)

    return await run_in_threadpool(keep)


@router.get("/{upload_id}", response_model=Upload)
def get_upload(upload_id: str, state: ServerState = Depends(get_state)) -> Upload:
    """What an upload holds."""
    path = upload_path(state.store.data_dir, upload_id) if len(upload_id) == 32 else None
    if path is None:
        raise HTTPException(404, f"no upload with id {upload_id!r}")
    return describe(path, upload_id)

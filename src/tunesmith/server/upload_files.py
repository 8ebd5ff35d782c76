"""Where uploads lie (data_dir/uploads/<id>) and what one holds."""

from __future__ import annotations

from pathlib import Path

from fastapi import HTTPException

from .schemas import Upload


def upload_folder(data_dir: Path) -> Path:
    folder = data_dir / "uploads"
    folder.mkdir(exist_ok=True)
    return folder


def upload_path(data_dir: Path, upload_id: str) -> Path | None:
    path = upload_folder(data_dir) / upload_id
    return path if path.is_file() else None


def describe(path: Path, upload_id: str) -> Upload:
    """What the file holds; 422 if it is not audio libsndfile reads."""
    import soundfile

    try:
        info = soundfile.info(str(path))
    except (RuntimeError, soundfile.LibsndfileError):
        raise HTTPException(
            422, "the upload is not an audio file this server reads (wav, flac, mp3, ogg, ...)"
        ) from None
    return Upload(
        id=upload_id,
        seconds=round(info.frames / info.samplerate, 3),
        sample_rate=info.samplerate,
        channels=info.channels,
    )

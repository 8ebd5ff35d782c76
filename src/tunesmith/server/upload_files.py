"""What an uploaded file holds, found by decoding all of it when it arrives: a file whose
header reads but whose frames do not (a corrupted FLAC) is refused then, not when a job
uses it."""

from __future__ import annotations

from pathlib import Path

from fastapi import HTTPException

BLOCK_FRAMES = 65536  # decoded a block at a time: memory stays small for any length
NOT_AUDIO = "the upload is not audio this server can decode (wav, flac, mp3, ogg, ...)"


def decode_whole(path: Path) -> tuple[float, int, int]:
    """(seconds, sample rate, channels) of an audio file, decoded to its end; 422 if any of
    it does not decode, or it holds no audio."""
    import soundfile

    try:
        with soundfile.SoundFile(str(path)) as f:
            rate, channels, frames = int(f.samplerate), int(f.channels), 0
            while len(block := f.read(BLOCK_FRAMES, dtype="float32")):
                frames += len(block)
    except (RuntimeError, soundfile.LibsndfileError, ValueError, TypeError):
        raise HTTPException(422, NOT_AUDIO) from None
    if frames == 0 or rate <= 0:
        raise HTTPException(422, "the upload holds no audio")
    return round(frames / rate, 3), rate, channels

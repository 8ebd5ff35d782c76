"""A loop's facts inside its file, where other tools look for them.

- WAV: a `smpl` chunk (the sampler chunk of the RIFF spec: one forward loop from its first to
  its last sample, played forever), which samplers and DAWs read, and an `acid` chunk (tempo,
  beats, 4/4), which ACID-style loop browsers read. Both are appended after the audio and the
  RIFF size is fixed; libsndfile and every other reader skip chunks they do not know.
- FLAC and OGG: Vorbis comments LOOPSTART and LOOPLENGTH (in samples, the names game engines
  and music players read) and BPM, written with mutagen.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

from ..errors import AudioFileError, InvalidOptionError

LOOP_FORMATS = ("wav", "flac", "ogg")  # MP3 pads its start: a loop in it would not be exact
MIDDLE_C = 60
ACID_ROOT_SET, ACID_STRETCH = 0x02, 0x04  # acid flags: root note valid, tempo-stretchable
TAGS_HINT = "loop tags in FLAC/OGG need mutagen: pip install 'tunesmith[tempo]'"


def smpl_chunk(length: int, sample_rate: int, root: int | None = None) -> bytes:
    """A `smpl` chunk with one infinite forward loop over samples [0, length - 1]."""
    period_ns = round(1e9 / sample_rate)
    body = struct.pack(
        "<9I", 0, 0, period_ns, MIDDLE_C if root is None else root, 0, 0, 0, 1, 0
    ) + struct.pack("<6I", 0, 0, 0, length - 1, 0, 0)  # id, forward, start, end (inclusive)
    return _chunk(b"smpl", body)


def acid_chunk(beats: int, bpm: float, root: int | None = None) -> bytes:
    """An `acid` chunk: a stretchable loop of `beats` beats in 4/4 at `bpm`."""
    flags = ACID_STRETCH | (ACID_ROOT_SET if root is not None else 0)
    note = MIDDLE_C if root is None else root
    body = struct.pack("<IHHfIHHf", flags, note, 0x8000, 0.0, beats, 4, 4, bpm)
    return _chunk(b"acid", body)


def _chunk(name: bytes, body: bytes) -> bytes:
    return name + struct.pack("<I", len(body)) + body + (b"\0" if len(body) % 2 else b"")


def append_wav_chunks(path: str | os.PathLike[str], chunks: bytes) -> None:
    """Append RIFF chunks to a WAV file (in place) and fix its RIFF size."""
    with open(path, "r+b") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            raise AudioFileError(f"{os.fspath(path)!r} is not a RIFF WAVE file")
        end = f.seek(0, os.SEEK_END)
        if end % 2:  # chunks start on even offsets
            f.write(b"\0")
            end += 1
        f.write(chunks)
        f.seek(4)
        f.write(struct.pack("<I", end + len(chunks) - 8))


def write_loop_metadata(
    path: str | os.PathLike[str],
    length: int,
    sample_rate: int,
    bpm: float,
    beats: int,
    root: int | None = None,
) -> None:
    """Mark the whole file at `path` (wav, flac or ogg) as one loop of `length` samples,
    `beats` beats at `bpm`; `root` is the MIDI note of the key's tonic, when known."""
    fmt = Path(path).suffix.lower().lstrip(".") or "wav"
    if fmt not in LOOP_FORMATS:
        raise InvalidOptionError(
            f"loop points go into {', '.join(LOOP_FORMATS)} files, not {fmt} "
            "(an MP3 encoder pads the start, so the loop would not be exact)"
        )
    if fmt == "wav":
        append_wav_chunks(
            path, smpl_chunk(length, sample_rate, root) + acid_chunk(beats, bpm, root)
        )
        return
    try:
        import mutagen
    except ImportError:
        raise InvalidOptionError(TAGS_HINT) from None
    try:
        audio = mutagen.File(os.fspath(path))
        if audio is None:
            raise AudioFileError(f"cannot tag {os.fspath(path)!r}: not a FLAC or OGG file")
        audio["LOOPSTART"] = "0"
        audio["LOOPLENGTH"] = str(length)
        audio["BPM"] = f"{bpm:.2f}".rstrip("0").rstrip(".")
        audio.save()
    except mutagen.MutagenError as err:
        raise AudioFileError(f"cannot tag {os.fspath(path)!r}: {err}") from None

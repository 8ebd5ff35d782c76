"""Audio the server hands out: file formats, media types, peaks for pictures, streamed WAV."""

from __future__ import annotations

import re
import struct
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

MEDIA_TYPES = {"wav": "audio/wav", "flac": "audio/flac", "mp3": "audio/mpeg", "ogg": "audio/ogg"}
SOUNDFILE_FORMATS = {"wav": "WAV", "flac": "FLAC", "mp3": "MP3", "ogg": "OGG"}
PEAK_COUNT = 160
STREAM_UNKNOWN_SIZE = 0xFFFFFFFF  # the usual "length unknown" marker of streamed WAV


@lru_cache(maxsize=1)
def available_formats() -> tuple[str, ...]:
    """The formats this machine's libsndfile can write (MP3 needs libsndfile >= 1.1)."""
    import soundfile

    have = soundfile.available_formats()
    return tuple(name for name, sf_name in SOUNDFILE_FORMATS.items() if sf_name in have)


def unavailable_reason(fmt: str) -> str | None:
    """Why `fmt` cannot be written here, or None if it can."""
    if fmt in available_formats():
        return None
    import soundfile

    version = getattr(soundfile, "__libsndfile_version__", "unknown")
    return (
        f"format {fmt!r} is not available on this server: its libsndfile ({version}) cannot "
        f"write it (MP3 needs libsndfile >= 1.1); choose one of {list(available_formats())}"
    )


def write(path: str, wav: torch.Tensor, sample_rate: int) -> None:
    """Write [C, N] float audio; the format follows the extension (WAV is 16-bit PCM)."""
    from ..audio.files import write_audio

    write_audio(path, wav, sample_rate)


def peaks(wav: torch.Tensor, count: int = PEAK_COUNT) -> list[float]:
    """Peak level in each of `count` equal slices of [C, N] audio, rounded for JSON."""
    level = wav.detach().float().abs().amax(dim=0).cpu()  # [N]
    if level.numel() == 0:
        return [0.0] * count
    edges = torch.linspace(0, level.numel(), count + 1).long()
    out = []
    for a, b in zip(edges[:-1].tolist(), edges[1:].tolist(), strict=True):
        out.append(round(min(1.0, float(level[a : max(b, a + 1)].max())), 3))
    return out


def download_name(prompt: str, job_id: str, fmt: str) -> str:
    """A readable file name: a slug of the prompt plus the start of the id."""
    slug = re.sub(r"[^a-z0-9]+", "-", prompt.lower()).strip("-")[:40].strip("-")
    return f"{slug or 'tunesmith'}-{job_id[:8]}.{fmt}"


def wav_stream_header(sample_rate: int, channels: int) -> bytes:
    """A 16-bit PCM WAV header whose sizes say "unknown", for audio of a length not yet known."""
    block = 2 * channels
    return (
        b"RIFF"
        + struct.pack("<I", STREAM_UNKNOWN_SIZE)
        + b"WAVEfmt "
        + struct.pack("<IHHIIHH", 16, 1, channels, sample_rate, sample_rate * block, block, 16)
        + b"data"
        + struct.pack("<I", STREAM_UNKNOWN_SIZE)
    )


def pcm16(chunk: torch.Tensor) -> bytes:
    """[C, n] float in [-1, 1] -> interleaved little-endian 16-bit PCM bytes."""
    data = chunk.detach().float().clamp(-1.0, 1.0).cpu().numpy().T  # [n, C]
    return np.round(data * 32767.0).astype("<i2").tobytes()


def convert(source: Path, fmt: str, folder: Path) -> Path:
    """A finished file in another format, written to a temporary file in `folder` (the
    caller removes it once sent)."""
    import tempfile

    from ..audio.files import read_audio

    info = _rate(source)
    wav = read_audio(source)
    fd, name = tempfile.mkstemp(prefix=".tunesmith-convert-", suffix=f".{fmt}", dir=folder)
    import os

    os.close(fd)
    write(name, wav, info)
    return Path(name)


def _rate(path: Path) -> int:
    import soundfile

    return int(soundfile.info(str(path)).samplerate)


def spectrogram_png(path: Path) -> bytes:
    """A spectrogram picture of an audio file (ImportError without matplotlib)."""
    import tempfile

    import matplotlib  # noqa: F401  (ImportError here, not halfway through)

    from ..audio.files import read_audio
    from ..audio.spectrogram import plot_spectrogram

    wav = read_audio(path)
    with tempfile.TemporaryDirectory(prefix="tunesmith-spectrogram-") as folder:
        target = Path(folder) / "spectrogram.png"
        plot_spectrogram(wav, _rate(path), target)
        return target.read_bytes()

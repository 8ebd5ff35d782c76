"""Audio files and sample-rate conversion, on libsndfile (soundfile) and libsoxr (soxr)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from .errors import AudioFileError


def resample(wav: torch.Tensor, from_rate: int, to_rate: int) -> torch.Tensor:
    """[C, N] float -> [C, N * to / from] with soxr's high-quality filter."""
    if from_rate == to_rate:
        return wav
    import soxr

    data = wav.detach().cpu().numpy().astype(np.float32).T  # soxr wants [N, C]
    out = soxr.resample(data, from_rate, to_rate, quality="HQ")
    return torch.from_numpy(np.ascontiguousarray(out.T)).reshape(wav.shape[0], -1)


def match_channels(wav: torch.Tensor, channels: int) -> torch.Tensor:
    """[C, N] -> [channels, N]: average to mono, or repeat mono to more channels."""
    if wav.shape[0] == channels:
        return wav
    if channels == 1:
        return wav.mean(dim=0, keepdim=True)
    if wav.shape[0] == 1:
        return wav.expand(channels, -1).clone()
    raise AudioFileError(f"cannot turn {wav.shape[0]}-channel audio into {channels} channels")


def read_audio(
    path: str | os.PathLike[str], sample_rate: int | None = None, channels: int | None = None
) -> torch.Tensor:
    """Read any file libsndfile reads -> [C, N] float32, resampled and remixed if asked."""
    import soundfile as sf

    try:
        data, rate = sf.read(os.fspath(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, OSError) as err:
        raise AudioFileError(f"cannot read audio file {os.fspath(path)!r}: {err}") from None
    wav = torch.from_numpy(np.ascontiguousarray(data.T))
    if channels is not None:
        wav = match_channels(wav, channels)
    if sample_rate is not None:
        wav = resample(wav, rate, sample_rate)
    return wav


def check_writable(path: str | os.PathLike[str]) -> None:
    """Raise AudioFileError unless a file can be created at `path` (checked before any work)."""
    target = Path(path)
    folder = target.parent if str(target.parent) else Path(".")
    if target.is_dir():
        raise AudioFileError(f"output {os.fspath(path)!r} is a folder; give a file name")
    if not folder.is_dir():
        raise AudioFileError(
            f"cannot write {os.fspath(path)!r}: folder {str(folder)!r} does not exist"
        )
    if not os.access(folder, os.W_OK):
        raise AudioFileError(f"cannot write {os.fspath(path)!r}: folder is not writable")
    file_format(target)


def file_format(path: str | os.PathLike[str]) -> str:
    """The soundfile format named by the extension (no extension: WAV), or AudioFileError."""
    import soundfile as sf

    fmt = Path(path).suffix.lstrip(".").upper() or "WAV"
    if fmt not in sf.available_formats() or sf.default_subtype(fmt) is None:
        raise AudioFileError(
            f"cannot write {os.fspath(path)!r}: unknown audio format {Path(path).suffix!r}"
            " (use .wav, .flac, .ogg or .mp3)"
        )
    return fmt


def write_audio(
    path: str | os.PathLike[str],
    wav: torch.Tensor,
    sample_rate: int,
    subtype: str | None = None,
) -> None:
    """Write [C, N] float audio; the format follows the extension (WAV: 16-bit PCM by default).

    Written to a temporary file beside the target, then renamed: a reader never sees half a file.
    """
    import soundfile as sf

    target = Path(path)
    data = wav.detach().float().clamp(-1.0, 1.0).cpu().numpy().T
    fmt = file_format(target)
    if fmt == "WAV" and subtype is None:
        subtype = "PCM_16"
    tmp = ""
    try:
        fd, tmp = tempfile.mkstemp(prefix=".tunesmith-", suffix=target.suffix, dir=target.parent)
        os.close(fd)
        sf.write(tmp, data, sample_rate, subtype=subtype, format=fmt)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual mode
        os.replace(tmp, target)
    except (sf.LibsndfileError, RuntimeError, ValueError, TypeError, OSError) as err:
        if tmp:
            Path(tmp).unlink(missing_ok=True)
        raise AudioFileError(f"cannot write {os.fspath(path)!r}: {err}") from None

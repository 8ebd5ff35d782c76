"""Audio files and sample-rate conversion, on libsndfile (soundfile) and libsoxr (soxr)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from ..errors import AudioFileError

# String tags libsndfile stores (WAV: RIFF INFO; FLAC, OGG: Vorbis comments; MP3: ID3 via LAME)
TAG_FIELDS = ("title", "artist", "album", "comment", "software", "date", "genre", "copyright")
MAX_TAG_BYTES = 1000  # libsndfile drops a WAV's whole INFO chunk if one string passes ~2 KB


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


def probe_write(folder: Path) -> None:
    """Create and remove a file in `folder` (OSError if it cannot): a real file, not
    os.access, since root may "write" to a read-only or virtual file system."""
    fd, probe = tempfile.mkstemp(prefix=".tunesmith-", dir=folder)
    os.close(fd)
    os.unlink(probe)


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
    try:
        probe_write(folder)
    except OSError as err:
        raise AudioFileError(
            f"cannot write {os.fspath(path)!r}: {err.strerror or err} in {str(folder)!r}"
        ) from None
    file_format(target)


def file_format(path: str | os.PathLike[str]) -> str:
    """The soundfile format named by the extension (no extension: WAV), or AudioFileError."""
    import soundfile as sf

    fmt = Path(path).suffix.lstrip(".").upper() or "WAV"
    if fmt == "MP3" and fmt not in sf.available_formats():
        raise AudioFileError(
            f"cannot write {os.fspath(path)!r}: this libsndfile ({sf.__libsndfile_version__}) "
            "has no MP3 support (it needs libsndfile 1.1 or newer); use .wav, .flac or .ogg"
        )
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
    *,
    normalize: str = "none",
    tags: Mapping[str, str] | None = None,
) -> None:
    """Write [C, N] float audio; the format follows the extension (WAV: 16-bit PCM by default).

    normalize: "loudness", "peak", "rms" or "none" (see `tunesmith.audio.loudness`). tags: string
    metadata among TAG_FIELDS (title, comment, ...), each cut to MAX_TAG_BYTES. Written to a
    temporary file beside the target, then renamed: a reader never sees half a file.
    """
    import soundfile as sf

    target = Path(path)
    if normalize != "none":
        from .loudness import normalize_audio

        wav = normalize_audio(wav, sample_rate, normalize)
    data = wav.detach().float().clamp(-1.0, 1.0).cpu().numpy().T
    fmt = file_format(target)
    strings = {_tag_field(key): _cut(value) for key, value in (tags or {}).items()}
    if fmt == "WAV" and subtype is None:
        subtype = "PCM_16"
    tmp = ""
    try:
        fd, tmp = tempfile.mkstemp(prefix=".tunesmith-", suffix=target.suffix, dir=target.parent)
        os.close(fd)
        with sf.SoundFile(tmp, "w", sample_rate, data.shape[1], subtype=subtype, format=fmt) as out:
            for key, value in strings.items():
                setattr(out, key, value)  # before any audio: FLAC and OGG need that
            out.write(data)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual mode
        os.replace(tmp, target)
    except (sf.LibsndfileError, RuntimeError, ValueError, TypeError, OSError) as err:
        if tmp:
            Path(tmp).unlink(missing_ok=True)
        raise AudioFileError(f"cannot write {os.fspath(path)!r}: {err}") from None


def read_tags(path: str | os.PathLike[str]) -> dict[str, str]:
    """The string tags of an audio file (those libsndfile reads), as written by `write_audio`.

    MP3: libsndfile hands UTF-8 text to LAME as is, and reading it back decodes each byte as
    Latin-1; that is undone here (other players may show such non-ASCII text garbled).
    """
    import soundfile as sf

    try:
        with sf.SoundFile(os.fspath(path)) as f:
            tags = dict(f.copy_metadata())
            is_mp3 = f.format == "MP3"
    except (sf.LibsndfileError, RuntimeError, OSError) as err:
        raise AudioFileError(f"cannot read audio file {os.fspath(path)!r}: {err}") from None
    if is_mp3:
        tags = {key: _undo_latin1(value) for key, value in tags.items()}
    return tags


def _tag_field(key: str) -> str:
    if key not in TAG_FIELDS:
        raise AudioFileError(f"unknown tag {key!r}: choose from {', '.join(TAG_FIELDS)}")
    return key


def _cut(value: str) -> str:
    raw = str(value).encode("utf-8")
    return raw[:MAX_TAG_BYTES].decode("utf-8", "ignore")


def _undo_latin1(value: str) -> str:
    try:
        return value.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return value

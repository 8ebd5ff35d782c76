"""The code cache: every segment of every file encoded once with the model's EnCodec.

Files are read at the model's rate and channel count, cut into segments of
`segment_seconds` (a last piece shorter than a second is dropped), silent segments skipped,
and the rest encoded. One cache file per audio file under DIR/codes, keyed by the file's
size and time and by the segmenting and codec: a rerun encodes only what changed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..audio.files import read_audio
from ..errors import AudioFileError
from ..musicgen import MusicGen
from .data import Example

MIN_SEGMENT_SECONDS = 1.0
SILENCE_RMS = 10 ** (-60 / 20)  # below -60 dBFS: nothing to learn from
ENCODE_BATCH = 8  # segments encoded together


@dataclass(frozen=True)
class Segment:
    """Codes [K, T] (int16) of one stretch of one file, and its caption."""

    codes: torch.Tensor
    caption: str
    source: str
    start: float  # seconds into the file


@dataclass
class EncodeReport:
    """What encoding found: segments kept, files and segments skipped and why."""

    segments: int = 0
    reused_files: int = 0
    unreadable: list[str] = field(default_factory=list)
    short: int = 0  # files or last pieces under a second
    silent: int = 0

    def lines(self) -> list[str]:
        out = [f"{self.segments} segments ({self.reused_files} files from the code cache)"]
        if self.unreadable:
            shown = ", ".join(self.unreadable[:3]) + (", ..." if len(self.unreadable) > 3 else "")
            out.append(f"skipped {len(self.unreadable)} unreadable file(s): {shown}")
        if self.short:
            out.append(f"skipped {self.short} piece(s) shorter than {MIN_SEGMENT_SECONDS:g} s")
        if self.silent:
            out.append(f"skipped {self.silent} silent segment(s)")
        return out


def codec_fingerprint(model: MusicGen) -> str:
    """What the codes depend on: the codec's config and (a digest of) its weights."""
    digest = hashlib.sha1(repr(model.config.audio_encoder).encode())
    for tensor in list(model.model.audio_encoder.state_dict().values())[:4]:
        digest.update(tensor.detach().float().cpu().numpy().tobytes()[:4096])
    digest.update(str(model.audio_channels).encode())
    return digest.hexdigest()[:16]


def encode_examples(
    model: MusicGen,
    examples: Sequence[Example],
    cache: Path,
    segment_seconds: float,
    progress: bool = True,
) -> tuple[list[Segment], EncodeReport]:
    """Segments of every readable file, encoded or read back from `cache`."""
    from tqdm import tqdm

    cache.mkdir(parents=True, exist_ok=True)
    report = EncodeReport()
    segments: list[Segment] = []
    codec = codec_fingerprint(model)
    bar = tqdm(examples, desc="encoding", unit="file", disable=not progress, leave=False)
    for example in bar:
        try:
            stat = example.path.stat()
        except OSError:
            report.unreadable.append(str(example.path))
            continue
        stamp = {
            "size": stat.st_size,
            "mtime_ns": stat.st_mtime_ns,
            "segment_seconds": segment_seconds,
            "codec": codec,
        }
        file = cache / f"{hashlib.sha1(str(example.path.resolve()).encode()).hexdigest()[:20]}.pt"
        stored = _read_cached(file, stamp)
        if stored is None:
            try:
                stored = _encode_file(model, example.path, segment_seconds)
            except AudioFileError:
                report.unreadable.append(str(example.path))
                continue
            torch.save({"stamp": stamp, **stored}, file.with_suffix(".tmp"))
            file.with_suffix(".tmp").replace(file)
        else:
            report.reused_files += 1
        report.short += stored["short"]
        report.silent += stored["silent"]
        for start, codes in stored["segments"]:
            segments.append(Segment(codes, example.caption, example.key, start))
    report.segments = len(segments)
    return segments, report


def _read_cached(file: Path, stamp: dict[str, Any]) -> dict[str, Any] | None:
    if not file.is_file():
        return None
    try:
        stored = torch.load(file, weights_only=True)
    except Exception:  # a half-written or foreign file: encode again
        return None
    return stored if stored.get("stamp") == stamp else None


def _encode_file(model: MusicGen, path: Path, segment_seconds: float) -> dict[str, Any]:
    wav = read_audio(path, sample_rate=model.sample_rate, channels=model.audio_channels)
    rate = model.sample_rate
    size = round(segment_seconds * rate)
    pieces: list[tuple[float, torch.Tensor]] = []
    short = silent = 0
    for begin in range(0, wav.shape[-1], size):
        piece = wav[:, begin : begin + size]
        if piece.shape[-1] < MIN_SEGMENT_SECONDS * rate:
            short += 1
        elif float(piece.pow(2).mean().sqrt()) < SILENCE_RMS:
            silent += 1
        else:
            pieces.append((begin / rate, piece))
    by_length: dict[int, list[tuple[float, torch.Tensor]]] = {}
    for start, piece in pieces:  # full segments batch together; a last piece goes alone
        by_length.setdefault(piece.shape[-1], []).append((start, piece))
    encoded: list[tuple[float, torch.Tensor]] = []
    for group in by_length.values():
        for i in range(0, len(group), ENCODE_BATCH):
            chunk = group[i : i + ENCODE_BATCH]
            codes = model.encode(torch.stack([piece for _, piece in chunk]))
            encoded += [
                (start, c.to(torch.int16).cpu()) for (start, _), c in zip(chunk, codes, strict=True)
            ]
    return {"segments": sorted(encoded, key=lambda s: s[0]), "short": short, "silent": silent}

"""What a generation is prompted with, as the public API takes it: the text prompts, and an
audio prompt given as a file, a waveform, or codes (what `encode` or `generate_tokens`
returned), each checked and brought to one shape."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch

from ..audio.files import match_channels, read_audio, resample
from ..errors import InvalidOptionError

Prompts = str | None | Sequence[str | None]


def prompt_list(prompts: Prompts) -> list[str | None]:
    """One prompt or several as a list; "" or None is unconditional."""
    if prompts is None or isinstance(prompts, str):
        return [prompts]
    texts = list(prompts)
    if not texts:
        raise InvalidOptionError('give at least one prompt ("" or None for unconditional)')
    for t in texts:
        if t is not None and not isinstance(t, str):
            raise InvalidOptionError(f"prompts must be strings or None, got {type(t).__name__}")
    return texts


def prompt_waveform(
    audio: torch.Tensor | str | Path, rate: int | None, *, sample_rate: int, channels: int
) -> torch.Tensor:
    """An audio file, or a waveform [N], [C, N] or [B, C, N] at `rate` (default
    `sample_rate`), as [B, channels, N] float32 at `sample_rate`."""
    if isinstance(audio, (str, os.PathLike)):
        return read_audio(audio, sample_rate=sample_rate, channels=channels)[None]
    if not isinstance(audio, torch.Tensor):
        raise InvalidOptionError(
            f"audio_prompt must be a tensor or a file path, got {type(audio).__name__}"
        )
    wav = audio.detach().float().cpu()
    wav = wav.view(1, 1, -1) if wav.dim() == 1 else wav[None] if wav.dim() == 2 else wav
    if wav.dim() != 3:
        raise InvalidOptionError(
            f"audio_prompt must be [N], [C, N] or [B, C, N], got {tuple(audio.shape)}"
        )
    wav = torch.stack([match_channels(w, channels) for w in wav])
    if rate is not None and rate != sample_rate:
        wav = torch.stack([resample(w, rate, sample_rate) for w in wav])
    return wav


def is_codes(prompt: object) -> bool:
    """Whether an audio prompt is codes: a long tensor (a waveform is floating point)."""
    return isinstance(prompt, torch.Tensor) and prompt.dtype == torch.long


def checked_codes(
    codes: torch.Tensor, *, codebooks: int, vocab: int, window: int, batch: int
) -> torch.Tensor:
    """Codes [B, K, P] as a prompt for `batch` rows (a single row is repeated): K codebooks,
    tokens in [0, vocab), at least one frame and fewer than the `window` frames."""
    if codes.dim() != 3 or codes.shape[1] != codebooks:
        raise InvalidOptionError(
            f"audio_prompt codes must be [batch, {codebooks}, frames], got {tuple(codes.shape)}"
        )
    if codes.shape[0] not in (1, batch):
        raise InvalidOptionError(f"audio_prompt has {codes.shape[0]} rows for {batch} prompts")
    if not 0 < codes.shape[-1] < window:
        raise InvalidOptionError(
            f"audio_prompt codes are {codes.shape[-1]} frames: they must be at least one and "
            f"fewer than the model's {window}-frame window"
        )
    if codes.numel() and not 0 <= int(codes.min()) <= int(codes.max()) < vocab:
        raise InvalidOptionError(f"audio_prompt codes must be tokens in [0, {vocab})")
    return codes.expand(batch, -1, -1) if codes.shape[0] != batch else codes

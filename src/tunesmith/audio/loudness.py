"""Loudness and level normalization before a clip is written, after audiocraft's `audio_write`.

Modes (audiocraft's defaults for the levels):

- "loudness": gain to -14 LUFS integrated loudness (ITU-R BS.1770-4, measured with pyloudnorm's
  meter). Audio whose RMS is below 2e-3 (near silence) is left as it is: measuring it is
  unreliable and raising it only raises noise.
- "peak": the largest sample to -1 dBFS.
- "rms": the RMS of the mono mix to -18 dBFS.
- "none": untouched (write_audio still clamps to [-1, 1], so loud audio can clip).

Every mode but "none" then makes sure nothing clips: where the gain would push a sample past
full scale, the whole clip is scaled down until the peak is exactly 1.0. audiocraft clamps the
samples instead (hard clipping); scaling keeps the waveform's shape at the cost of landing
below the loudness target on very peaky audio.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch

from ..errors import InvalidOptionError

NORMALIZE_MODES = ("loudness", "peak", "rms", "none")
TARGET_LUFS = -14.0  # audiocraft's loudness_headroom_db=14
PEAK_DB = -1.0  # audiocraft's peak_clip_headroom_db=1
RMS_DB = -18.0  # audiocraft's rms_headroom_db=18
ENERGY_FLOOR = 2e-3  # audiocraft: below this RMS, loudness normalization leaves the audio alone
BLOCK_SECONDS = 0.4  # BS.1770 gating block


def check_mode(mode: str) -> str:
    """Return `mode` if it is one of NORMALIZE_MODES, else raise InvalidOptionError."""
    if mode not in NORMALIZE_MODES:
        raise InvalidOptionError(
            f"unknown normalize mode {mode!r}: choose from {', '.join(NORMALIZE_MODES)}"
        )
    return mode


def measure_loudness(wav: torch.Tensor, sample_rate: int) -> float:
    """Integrated loudness in LUFS of [C, N] audio (C <= 5), -inf for silence.

    Clips shorter than the standard 400 ms gating block are measured as one block spanning the
    whole clip (BS.1770 needs at least one full block; pyloudnorm refuses shorter input).
    """
    import pyloudnorm

    if wav.dim() != 2 or wav.shape[-1] == 0:
        raise InvalidOptionError(f"expected [channels, samples] audio, got {tuple(wav.shape)}")
    data = wav.detach().cpu().double().numpy().T  # pyloudnorm wants [N, C]
    block = min(BLOCK_SECONDS, data.shape[0] / sample_rate)
    meter = pyloudnorm.Meter(sample_rate, block_size=block)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # log10(0) on silent blocks
        return float(meter.integrated_loudness(np.ascontiguousarray(data)))


def limit(wav: torch.Tensor, ceiling: float = 1.0) -> torch.Tensor:
    """Scale the whole clip down so that no sample exceeds `ceiling` (no-op if none does)."""
    peak = float(wav.abs().max()) if wav.numel() else 0.0
    return wav * (ceiling / peak) if peak > ceiling else wav


def normalize_audio(
    wav: torch.Tensor,
    sample_rate: int,
    mode: str = "loudness",
    *,
    target_lufs: float = TARGET_LUFS,
    peak_db: float = PEAK_DB,
    rms_db: float = RMS_DB,
    energy_floor: float = ENERGY_FLOOR,
) -> torch.Tensor:
    """[C, N] float audio -> the same shape, levelled by `mode` (see the module docstring)."""
    check_mode(mode)
    wav = wav.detach().float()
    if mode == "none" or wav.numel() == 0:
        return wav
    if mode == "loudness":
        if float(wav.pow(2).mean().sqrt()) >= energy_floor:
            current = measure_loudness(wav, sample_rate)
            if math.isfinite(current):
                wav = wav * 10.0 ** ((target_lufs - current) / 20.0)
    elif mode == "peak":
        peak = float(wav.abs().max())
        if peak > 0:
            wav = wav * (10.0 ** (peak_db / 20.0) / peak)
    else:  # rms
        rms = float(wav.mean(dim=0).pow(2).mean().sqrt())
        if rms > 0:
            wav = wav * (10.0 ** (rms_db / 20.0) / rms)
    return limit(wav)

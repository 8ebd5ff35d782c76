"""Key detection: a key-profile method on the chroma tunesmith computes for melodies.

The clip's pitch-class content is summed over time (the chroma filter bank of `chroma`, on
magnitudes rather than powers, so that a chord's notes count nearly as much as their
overtones do not), then correlated with the major and minor key profiles of Temperley
(Kostka-Payne corpus, 2007) rotated to each of the 12 tonics; the best of the 24 is the key,
and its correlation the confidence. Pitch shifting to another key is Rubber Band's (`tempo`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .chroma import chroma_filter_bank, power_spectrogram
from .files import resample

ANALYSIS_RATE = 16000  # pitch classes need nothing above ~5 kHz
N_FFT = 8192  # ~2 Hz bins at ANALYSIS_RATE: the low octaves' semitones stay apart
HOP = 4096
MODES = ("major", "minor")
# Temperley's profiles, C first: how often each pitch class sounds in that mode.
PROFILES = {
    "major": np.array([5.0, 2.0, 3.5, 2.0, 4.5, 4.0, 2.0, 4.5, 2.0, 3.5, 1.5, 4.0]),
    "minor": np.array([5.0, 2.0, 3.5, 4.5, 2.0, 4.0, 2.0, 4.5, 3.5, 2.0, 1.5, 4.0]),
}


@dataclass(frozen=True)
class KeyReading:
    """The detected key: tonic pitch class (0 = C), mode, and the profile's correlation."""

    tonic: int
    mode: str
    confidence: float


def pitch_classes(wav: torch.Tensor, sample_rate: int) -> np.ndarray:
    """[C, N] audio -> how strongly each of the 12 pitch classes sounds in it (C first), [12]."""
    mono = resample(
        wav.detach().float().cpu().mean(dim=0, keepdim=True), sample_rate, ANALYSIS_RATE
    )
    if mono.shape[-1] < N_FFT:
        mono = torch.nn.functional.pad(mono, (0, N_FFT - mono.shape[-1]))
    filters = torch.from_numpy(chroma_filter_bank(ANALYSIS_RATE, N_FFT)).float()
    magnitude = power_spectrogram(mono, N_FFT, HOP)[0].sqrt()  # [bins, frames]
    return (filters @ magnitude).sum(dim=1).double().numpy()


def detect_key(wav: torch.Tensor, sample_rate: int) -> KeyReading:
    """The key of [C, N] audio (see the module docstring)."""
    profile = pitch_classes(wav, sample_rate)
    best = KeyReading(0, "major", -1.0)
    if not np.any(profile > 0) or np.allclose(profile, profile[0]):
        return KeyReading(0, "major", 0.0)  # silence or noise: no key stands out
    for mode in MODES:
        for tonic in range(12):
            r = float(np.corrcoef(profile, np.roll(PROFILES[mode], tonic))[0, 1])
            if r > best.confidence:
                best = KeyReading(tonic, mode, r)
    return best


def key_shift(from_tonic: int, to_tonic: int) -> int:
    """Semitones from one tonic to another the short way round, in [-6, 5]."""
    return (to_tonic - from_tonic + 6) % 12 - 6

"""Chroma of a reference melody, the conditioning musicgen-melody reads (what transformers'
MusicgenMelodyFeatureExtractor computes on raw audio).

Power spectrogram (n_fft 16384, hop 4096, Hann window, centred with reflection, scaled by the
window's norm), projected onto 12 pitch classes with librosa's chroma filter bank (C first),
then each frame reduced to a one-hot of its strongest class. audiocraft first removes drums
and bass with Demucs; tunesmith does not (no Demucs here), so give it a melodic stem for the
closest match.
"""

from __future__ import annotations

import math
import os

import numpy as np
import torch

from ..errors import InvalidOptionError
from .files import read_audio, resample

N_FFT = 16384
HOP = 4096
NUM_CHROMA = 12


def chroma_filter_bank(
    sampling_rate: int, n_fft: int = N_FFT, num_chroma: int = NUM_CHROMA
) -> np.ndarray:
    """[num_chroma, n_fft // 2 + 1] weights from FFT bins to pitch classes (librosa's
    `filters.chroma` with tuning 0, L2-normalised columns, octave weighting centred on
    octave 5 with half-width 2, starting at C)."""
    freqs = np.linspace(0, sampling_rate, n_fft, endpoint=False)[1:]
    # Pitch of each bin in chroma bins above A0 (27.5 Hz), as librosa's hz_to_octs.
    bins = num_chroma * np.log2(freqs / (440.0 / 16))
    bins = np.concatenate(([bins[0] - 1.5 * num_chroma], bins))  # the 0 Hz bin
    widths = np.concatenate((np.maximum(bins[1:] - bins[:-1], 1.0), [1.0]))
    dist = np.subtract.outer(bins, np.arange(num_chroma, dtype=np.float64)).T
    half = np.round(num_chroma / 2)
    dist = np.remainder(dist + half + 10 * num_chroma, num_chroma) - half
    weights = np.exp(-0.5 * (2 * dist / np.tile(widths, (num_chroma, 1))) ** 2)
    weights = weights / np.sqrt(np.sum(weights**2, axis=0, keepdims=True))
    weights *= np.exp(-0.5 * ((bins / num_chroma - 5.0) / 2.0) ** 2)[None, :]
    weights = np.roll(weights, -3 * (num_chroma // 12), axis=0)
    return np.ascontiguousarray(weights[:, : n_fft // 2 + 1])


def power_spectrogram(wav: torch.Tensor, n_fft: int = N_FFT, hop: int = HOP) -> torch.Tensor:
    """[B, N] -> [B, n_fft // 2 + 1, frames] |STFT|^2, the window's energy normalised out."""
    window = torch.hann_window(n_fft, dtype=wav.dtype, device=wav.device)
    spec = torch.stft(
        wav,
        n_fft,
        hop_length=hop,
        win_length=n_fft,
        window=window,
        center=True,
        pad_mode="reflect",
        return_complex=True,
    )
    return (spec / window.pow(2).sum().sqrt()).abs().pow(2)


def chroma_features(
    wav: torch.Tensor, sampling_rate: int = 32000, max_seconds: float | None = 30.0
) -> torch.Tensor:
    """Waveform [N], [B, N] or [B, C, N] (channels are averaged) at `sampling_rate` ->
    one-hot chroma [B, frames, 12], float32. Audio past `max_seconds` is cut (the model
    reads at most 30 s of melody)."""
    wav = wav.detach().float().cpu()
    if wav.dim() == 1:
        wav = wav[None]
    elif wav.dim() == 3:
        wav = wav.mean(dim=1)
    if max_seconds is not None:
        wav = wav[:, : int(max_seconds * sampling_rate)]
    length = wav.shape[-1]
    if length < N_FFT:  # too short for one window: centre it in silence
        pad = N_FFT - length
        wav = torch.nn.functional.pad(wav, (pad // 2, pad - pad // 2))
    filters = torch.from_numpy(chroma_filter_bank(sampling_rate)).float()
    raw = torch.einsum("cf,bft->bct", filters, power_spectrogram(wav))
    norm = raw / raw.amax(dim=1, keepdim=True).clamp(min=1e-6)
    idx = norm.argmax(dim=1)  # [B, frames]
    return torch.nn.functional.one_hot(idx, NUM_CHROMA).float()


def chroma_frames(seconds: float, sampling_rate: int = 32000) -> int:
    """Frames of chroma for `seconds` of audio (centred STFT: one more than whole hops)."""
    return math.floor(max(seconds * sampling_rate, N_FFT) / HOP) + 1


def melody_chroma(
    melody: torch.Tensor | str | os.PathLike[str],
    rate: int | None,
    batch: int,
    sampling_rate: int = 32000,
) -> torch.Tensor:
    """A reference melody (an audio file, or a waveform [N], [C, N] or [B, C, N] at `rate`,
    default `sampling_rate`) -> chroma [batch, frames, 12] for a melody checkpoint."""
    if isinstance(melody, (str, os.PathLike)):
        wav = read_audio(melody, sample_rate=sampling_rate, channels=1)
    elif isinstance(melody, torch.Tensor):
        if melody.dim() not in (1, 2, 3) or melody.shape[-1] == 0:
            raise InvalidOptionError(
                f"melody must be [N], [C, N] or [B, C, N] samples, got {tuple(melody.shape)}"
            )
        wav = melody.detach().float().cpu()
        # -> [B, N] mono rows (the chroma ignores stereo placement)
        wav = wav.mean(dim=1) if wav.dim() == 3 else wav.reshape(-1, wav.shape[-1]).mean(0)[None]
        if rate is not None and rate != sampling_rate:
            wav = resample(wav, rate, sampling_rate)  # rows resample like channels
    else:
        raise InvalidOptionError(
            f"melody must be a tensor or a file path, got {type(melody).__name__}"
        )
    chroma = chroma_features(wav, sampling_rate)
    if chroma.shape[0] not in (1, batch):
        raise InvalidOptionError(f"melody has {chroma.shape[0]} rows for {batch} prompts")
    return chroma.expand(batch, -1, -1)

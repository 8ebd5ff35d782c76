"""Tempo: how fast a clip's beat goes, where its beats fall, and the clip time-stretched (or
pitch-shifted) without changing the other.

Measuring runs librosa, offline and with no learned weights, on a mono copy at 16 kHz:
1. an onset-strength envelope (spectral flux on a mel spectrogram) in 4 ms hops;
2. librosa's tempogram estimate picks the metrical level (the beat, not the bar or the
   eighth note), with the target tempo, when there is one, as its prior;
3. that period is refined on the envelope's autocorrelation: at each multiple of the period
   that fits in the clip, the peak is found and interpolated between lags, and the estimates
   are averaged with their lag as weight (a bar's lag pins the beat four times closer than one
   beat's). This reads a steady tempo to about 0.01 BPM, where the tempogram's bins are ~1 BPM
   apart;
4. the autocorrelation at the period (1 for a perfectly repeating envelope, ~0 for noise) is
   the pulse's clarity: below a threshold the clip has no tempo to read;
5. librosa's dynamic-programming beat tracker, held to the refined tempo, places the beats.

Half- and double-time readings are resolved toward a target (`toward`): of the reading, half
and double it, the one closest to the target (in ratio) is kept.

Stretching is Rubber Band (through Spotify's pedalboard) in its high-quality mode: pitch kept
while the tempo changes, or pitch shifted while the tempo stays, in one pass.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import InvalidOptionError
from .files import resample

ANALYSIS_RATE = 16000
HOP = 64  # 4 ms at ANALYSIS_RATE
COARSE = 4  # envelope frames summed for the tempogram's estimate
SEARCH = 0.04  # each multiple's peak is looked for within 4% of where the period puts it
MIN_SECONDS = 2.0  # shorter clips hold too few beats to read a tempo from
MIN_CLARITY = 0.2  # below this the onsets repeat no more than noise does: no tempo
TEMPO_HINT = (
    "tempo, key shifts and loops need librosa, pedalboard and mutagen: "
    "pip install 'tunesmith[tempo]'"
)


@dataclass(frozen=True)
class TempoReading:
    """A clip's measured tempo: `bpm` (None: no steady beat), the pulse's `clarity` (0 to 1),
    and `beats`, the beats' sample positions at the clip's own rate."""

    bpm: float | None
    clarity: float
    beats: np.ndarray  # [beats] int64 sample positions

    def toward(self, target: float) -> float | None:
        """The reading with half or double time resolved toward `target` BPM."""
        if self.bpm is None:
            return None
        return min((self.bpm * f for f in (0.5, 1.0, 2.0)), key=lambda b: abs(math.log(b / target)))


def require(module: str) -> None:
    """Import `module` (librosa, pedalboard) or say in one line how to install it."""
    try:
        __import__(module)
    except ImportError:
        raise InvalidOptionError(TEMPO_HINT) from None


def onset_envelope(wav: torch.Tensor, sample_rate: int) -> np.ndarray:
    """[C, N] audio -> its onset strength [frames] at ANALYSIS_RATE / HOP frames a second."""
    import librosa

    mono = resample(
        wav.detach().float().cpu().mean(dim=0, keepdim=True), sample_rate, ANALYSIS_RATE
    )
    return librosa.onset.onset_strength(y=mono[0].numpy(), sr=ANALYSIS_RATE, hop_length=HOP)


def measure_tempo(
    wav: torch.Tensor,
    sample_rate: int,
    *,
    near: float | None = None,
    min_clarity: float = MIN_CLARITY,
) -> TempoReading:
    """Read the tempo and beats of [C, N] audio (see the module docstring); `near` is the tempo
    expected (the prior of step 2). A clip without a steady beat reads bpm=None, no beats."""
    import librosa

    require("librosa")
    if wav.shape[-1] < MIN_SECONDS * sample_rate:
        return TempoReading(None, 0.0, np.zeros(0, dtype=np.int64))
    env = onset_envelope(wav, sample_rate)
    rate = ANALYSIS_RATE / HOP  # envelope frames a second
    # The tempogram only picks the metrical level: 16 ms frames are plenty, and 16x cheaper.
    frames = len(env) // COARSE * COARSE
    coarse_env = env[:frames].reshape(-1, COARSE).sum(axis=1)
    coarse = librosa.feature.tempo(
        onset_envelope=coarse_env, sr=ANALYSIS_RATE, hop_length=HOP * COARSE,
        start_bpm=near or 120.0,
    )  # fmt: skip
    period, clarity = refine_period(env, 60.0 * rate / float(coarse[0]))
    if period is None or clarity < min_clarity:
        return TempoReading(None, max(clarity, 0.0), np.zeros(0, dtype=np.int64))
    bpm = 60.0 * rate / period
    _, beats = librosa.beat.beat_track(
        onset_envelope=env, sr=ANALYSIS_RATE, hop_length=HOP, bpm=bpm, tightness=400, trim=False
    )
    samples = np.round(np.asarray(beats) * HOP * sample_rate / ANALYSIS_RATE).astype(np.int64)
    return TempoReading(bpm, clarity, samples)


def refine_period(env: np.ndarray, lag: float) -> tuple[float | None, float]:
    """The beat period in envelope frames near `lag`, to a fraction of a frame, and the
    normalised autocorrelation there (the pulse's clarity).

    The multiples are visited in order, each looked for near where the estimate so far puts
    it: the first within SEARCH of `lag` (a tempogram's coarse reading), the later ones within
    a few frames, so that an error in `lag` does not grow with the multiple."""
    e = env.astype(np.float64) - env.mean()
    n = len(e)
    spectrum = np.fft.rfft(e, 2 * n)
    acf = np.fft.irfft(np.abs(spectrum) ** 2)[:n]
    if acf[0] <= 0:
        return None, 0.0
    acf /= acf[0]
    estimates: list[float] = []
    weights: list[float] = []
    period = lag
    reach = SEARCH * lag
    multiple = 1
    while multiple * period + reach < n / 2:  # past half the clip too few pairs overlap
        centre = multiple * period
        lo, hi = max(1, math.floor(centre - reach)), math.ceil(centre + reach)
        peak = lo + int(np.argmax(acf[lo : hi + 1]))
        if acf[peak] > 0 and peak + 1 < n:
            before, at, after = acf[peak - 1], acf[peak], acf[peak + 1]
            curve = before - 2 * at + after
            offset = 0.5 * (before - after) / curve if curve < 0 else 0.0
            estimates.append((peak + offset) / multiple)
            weights.append(at * multiple)
            period = float(np.average(estimates, weights=weights))
        reach = max(2.0, SEARCH * period / multiple)  # the estimate is now this close
        multiple += 1
    if not estimates:
        return None, 0.0
    return period, float(np.interp(period, np.arange(n), acf))


def stretch(
    wav: torch.Tensor, sample_rate: int, factor: float = 1.0, semitones: float = 0.0
) -> torch.Tensor:
    """[C, N] audio played `factor` times as fast (pitch kept) and `semitones` higher (tempo
    kept), by Rubber Band's high-quality mode: [C, about N / factor]."""
    require("pedalboard")
    import pedalboard

    data = np.ascontiguousarray(wav.detach().float().cpu().numpy())
    out = pedalboard.time_stretch(
        data, float(sample_rate), stretch_factor=float(factor),
        pitch_shift_in_semitones=float(semitones), high_quality=True,
    )  # fmt: skip
    return torch.from_numpy(np.ascontiguousarray(out)).reshape(wav.shape[0], -1)

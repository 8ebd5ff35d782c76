"""Seamless loops: exactly BARS bars of 4/4 that start on a beat and repeat without a click.

The loop is the `length` samples from a beat on. Its last `crossfade` samples (about a beat)
are crossfaded, on equal-power curves, into the audio that led into its first beat: played
again and again, its end runs into its start exactly as the music ran into that beat, so there
is no jump in the waveform, the level or the spectrum at the seam. The loop therefore needs a
beat's worth of audio before its start; the first beat with that much before it and a whole
loop after it is taken (of the first bar's worth of such beats, the most accented: most often
the downbeat).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..errors import InvalidOptionError
from .fades import equal_power

ACCENT_SECONDS = 0.05  # a beat's accent: the audio's RMS over this long after it
SNAP_BACK, SNAP_AHEAD = 0.05, 0.01  # seconds around a tracked beat to look for its attack


@dataclass(frozen=True)
class Loop:
    """Where a loop was cut: `start` (the sample of the source it begins at), `length` and
    `crossfade` in samples, its `bars` at `bpm`, and whether `start` is a tracked beat."""

    start: int
    length: int
    crossfade: int
    bars: int
    bpm: float
    on_beat: bool

    @property
    def beats(self) -> int:
        return self.bars * 4


def loop_samples(bars: int, bpm: float, sample_rate: int) -> int:
    """The length of `bars` 4/4 bars at `bpm`, to the nearest sample."""
    return round(bars * 4 * 60.0 / bpm * sample_rate)


def make_loop(
    wav: torch.Tensor,
    sample_rate: int,
    bars: int,
    bpm: float,
    beats: np.ndarray,
    crossfade_beats: float = 1.0,
) -> tuple[torch.Tensor, Loop]:
    """[C, N] audio -> a [C, length] loop of `bars` bars at `bpm` and where it was cut.

    `beats` are the tracked beats' sample positions; with none (a clip without a steady beat)
    the loop starts where a crossfade's worth of audio lies before it. InvalidOptionError when
    the audio is too short for the loop and its crossfade.
    """
    n = wav.shape[-1]
    length = loop_samples(bars, bpm, sample_rate)
    crossfade = min(round(crossfade_beats * 60.0 / bpm * sample_rate), length // 2)
    if crossfade + length > n:
        raise InvalidOptionError(
            f"a loop of {bars} bars at {bpm:.2f} BPM needs {(crossfade + length) / sample_rate:.2f}s"
            f" of audio (with a beat to crossfade); there are {n / sample_rate:.2f}s"
        )
    start = choose_start(wav, sample_rate, beats, length, crossfade)
    on_beat = start is not None
    if start is None:
        start = crossfade
    body = wav[..., start : start + length].detach().float().clone()
    lead_in = wav[..., start - crossfade : start].detach().float()
    if crossfade:
        down = equal_power(crossfade, rising=False, device=body.device)
        up = equal_power(crossfade, rising=True, device=body.device)
        body[..., length - crossfade :] = body[..., length - crossfade :] * down + lead_in * up
    return body, Loop(start, length, crossfade, bars, bpm, on_beat)


def choose_start(
    wav: torch.Tensor, sample_rate: int, beats: np.ndarray, length: int, crossfade: int
) -> int | None:
    """The beat the loop starts on: of the first four beats with a crossfade before them and a
    whole loop after, the most accented; None if no beat fits."""
    n = wav.shape[-1]
    fitting = [int(b) for b in beats if crossfade <= b and b + length <= n][:4]
    if not fitting:
        return None
    span = max(1, round(ACCENT_SECONDS * sample_rate))
    accents = [float(wav[..., b : b + span].float().pow(2).mean()) for b in fitting]
    beat = fitting[int(np.argmax(accents))]
    return max(crossfade, attack_start(wav, sample_rate, beat))


def attack_start(wav: torch.Tensor, sample_rate: int, beat: int) -> int:
    """Where the attack of the beat at `beat` begins: a beat tracker's beat lags the sound's
    first sample by some milliseconds (its frames are long), and a loop cut there would start
    inside the attack. From SNAP_BACK before the beat to SNAP_AHEAD after it, the attack
    begins at the first millisecond whose energy rises a tenth of the way from the quietest
    to the loudest one before the loudest."""
    hop = max(1, sample_rate // 1000)
    lo = max(0, beat - round(SNAP_BACK * sample_rate))
    hi = min(wav.shape[-1], beat + round(SNAP_AHEAD * sample_rate))
    frames = (hi - lo) // hop
    if frames < 3:
        return beat
    power = wav[..., lo : lo + frames * hop].float().pow(2).mean(dim=0).reshape(frames, hop)
    energy = power.mean(dim=1).numpy()
    peak = int(np.argmax(energy))
    floor = float(energy[: peak + 1].min())
    rising = np.nonzero(energy[: peak + 1] >= floor + 0.1 * (energy[peak] - floor))[0]
    return lo + int(rising[0]) * hop

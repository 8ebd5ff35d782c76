"""Seamless loops with known answers: a 4-bar loop at 120 BPM is 8.000 s to the sample and,
played twice in a row, changes at its seam no more than at the clip's own beats, with no step
in the waveform larger than the clip's own largest; a loop cut without the crossfade clicks.

The seam is a beat (the loop starts on one, on its attack), so its spectral flux is held to the
95th percentile of the flux the clip has at its own beats, measured the same way: over every
frame pair that touches the beat. Held to the whole clip's frames instead, any loop that starts
on an attack would fail, since a beat's attack is among the largest changes a clip has.
"""

from __future__ import annotations

import librosa
import numpy as np
import pytest
import torch

from tunesmith.audio.loops import loop_samples, make_loop
from tunesmith.audio.tempo import measure_tempo
from tunesmith.errors import InvalidOptionError
from tunesmith.testing.signals import RATE, song, swell

N_FFT, HOP = 2048, 512


def spectral_flux(wav: np.ndarray) -> np.ndarray:
    """Frame-to-frame spectral flux: the mean absolute change of the log-mel spectrum (dB)."""
    mel = librosa.feature.melspectrogram(y=wav, sr=RATE, n_fft=N_FFT, hop_length=HOP, center=False)
    return np.abs(np.diff(librosa.power_to_db(mel), axis=1)).mean(axis=0)


def touching(at: int, frames: int) -> list[int]:
    """The frame pairs (i, i + 1) whose frames hold samples on both sides of sample `at`."""
    return [i for i in range(frames) if i * HOP < at < (i + 1) * HOP + N_FFT]


def seam_checks(loop: np.ndarray, beats: list[int]) -> tuple[float, float, float, float]:
    """(seam flux, the 95th percentile of the clip's flux at its `beats`, the step at the seam,
    the clip's largest step) for `loop` played twice in a row."""
    n = loop.size
    twice, own = spectral_flux(np.concatenate([loop, loop])), spectral_flux(loop)
    seam = float(twice[touching(n, twice.size)].max())
    inside = [b for b in beats if N_FFT + HOP < b < n - N_FFT - HOP]
    at_beats = [float(own[touching(b, own.size)].max()) for b in inside]
    step = abs(float(loop[0]) - float(loop[-1]))
    return seam, float(np.percentile(at_beats, 95)), step, float(np.abs(np.diff(loop)).max())


def run_on_db(loop: np.ndarray, source: np.ndarray, start: int) -> float:
    """How far (mean dB over mel bands) the loop's last frame is from the frame of the source
    that led into the loop's first beat: what the seam replays."""

    def db(x: np.ndarray) -> np.ndarray:
        mel = librosa.feature.melspectrogram(
            y=x, sr=RATE, n_fft=N_FFT, hop_length=N_FFT, center=False
        )
        return librosa.power_to_db(mel)[:, 0]

    return float(np.abs(db(loop[-N_FFT:]) - db(source[start - N_FFT : start])).mean())


@pytest.fixture(scope="module")
def crescendo() -> torch.Tensor:
    """Drums and a chord a bar at 120 BPM, growing from quiet to loud: its end is louder
    than its start, so a loop cut without care jumps at the seam."""
    music = song(120, 0, "major", 7)
    return torch.from_numpy(music * np.linspace(0.3, 1.0, music.size, dtype=np.float32))[None]


def test_a_4_bar_loop_at_120_is_8_seconds_to_the_sample_and_seamless(crescendo) -> None:
    reading = measure_tempo(crescendo, RATE, near=120)
    loop, where = make_loop(crescendo, RATE, 4, 120.0, reading.beats)
    assert loop.shape == (1, 8 * RATE) and where.length == loop_samples(4, 120, RATE) == 256000
    assert where.on_beat and where.start == round(2.05 * RATE)  # the downbeat's first sample
    beats = [k * RATE // 2 for k in range(16)]  # the loop's own beats, every 0.5 s
    seam, at_beats, step, largest = seam_checks(loop[0].numpy(), beats)
    assert seam <= at_beats, (seam, at_beats)
    assert step <= largest, (step, largest)
    # Its end runs into its start as the music ran into that beat; a plain cut does not.
    source = crescendo[0].numpy()
    assert run_on_db(loop[0].numpy(), source, where.start) < 3.0
    hard = source[where.start : where.start + where.length]
    assert run_on_db(hard, source, where.start) > 4.5


def test_a_loop_cut_without_its_crossfade_clicks() -> None:
    held = torch.from_numpy(swell(120, 11.0))[None]  # a held pad: a careless cut clicks
    reading = measure_tempo(held, RATE, near=120)
    loop, where = make_loop(held, RATE, 4, 120.0, reading.beats)
    beats = [k * RATE // 2 for k in range(16)]
    _, _, step, largest = seam_checks(loop[0].numpy(), beats)
    assert step <= largest
    hard = held[0, where.start : where.start + where.length].numpy()
    _, _, step, largest = seam_checks(hard, beats)
    assert step > 2 * largest  # the check above can fail


def test_without_beats_the_loop_still_has_its_length() -> None:
    noise = torch.from_numpy(np.random.default_rng(1).standard_normal(6 * RATE).astype(np.float32))
    loop, where = make_loop(noise[None], RATE, 2, 110.0, np.zeros(0, dtype=np.int64))
    assert loop.shape[-1] == round(2 * 4 * 60 / 110 * RATE) and not where.on_beat


def test_a_loop_longer_than_the_audio_is_refused() -> None:
    with pytest.raises(InvalidOptionError, match=r"needs .* of audio"):
        make_loop(torch.zeros(1, 4 * RATE), RATE, 2, 120.0, np.zeros(0, dtype=np.int64))

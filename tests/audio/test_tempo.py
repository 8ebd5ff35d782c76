"""Tempo with known answers: drum patterns the test makes at known tempos, measured; a clip
stretched from 100 to 120 BPM measures 120 and keeps its pitch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tunesmith.audio.key import detect_key, pitch_classes
from tunesmith.audio.tempo import measure_tempo, stretch
from tunesmith.testing.signals import RATE, drums, song

TEMPOS = (70, 84, 97, 110, 123, 137, 150, 165, 180)


def clip(samples: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(samples)[None]


@pytest.mark.parametrize("bpm", TEMPOS)
def test_measured_tempo_is_within_1_bpm(bpm: int) -> None:
    wav = clip(drums(bpm, 6.0))
    target = bpm * 1.15  # a user's target near, not at, the truth: it only picks the octave
    reading = measure_tempo(wav, RATE, near=target)
    assert reading.toward(target) == pytest.approx(bpm, abs=1.0)
    # Without a target the reading may be half or double time, but no further off.
    free = measure_tempo(wav, RATE).bpm
    assert free is not None
    assert min(abs(free * f - bpm) for f in (0.5, 1.0, 2.0)) <= 1.0
    assert len(reading.beats) >= 6 and reading.clarity > 0.5


def test_noise_has_no_tempo() -> None:
    noise = torch.from_numpy(np.random.default_rng(0).standard_normal(6 * RATE).astype(np.float32))
    reading = measure_tempo(0.1 * noise[None], RATE, near=110)
    assert reading.bpm is None and reading.clarity < 0.2 and len(reading.beats) == 0
    assert reading.toward(110) is None


def test_half_and_double_time_resolve_toward_the_target() -> None:
    reading = measure_tempo(clip(drums(80, 6.0)), RATE, near=80)
    assert reading.toward(155) == pytest.approx(160, abs=2.0)
    assert reading.toward(45) == pytest.approx(40, abs=1.0)


def test_100_stretched_to_120_measures_120_and_keeps_its_pitch() -> None:
    wav = clip(song(100, 9, "minor", 4))  # A minor
    fast = stretch(wav, RATE, 1.2)
    assert fast.shape[-1] == pytest.approx(wav.shape[-1] / 1.2, rel=0.01)
    after = measure_tempo(fast, RATE, near=120).toward(120)
    assert after == pytest.approx(120, abs=0.5)
    before, kept = pitch_classes(wav, RATE), pitch_classes(fast, RATE)
    assert np.corrcoef(before, kept)[0, 1] > 0.98  # the chroma is unchanged
    assert (detect_key(fast, RATE).tonic, detect_key(fast, RATE).mode) == (9, "minor")
    # The same measure tells a semitone's shift apart: it would catch a pitch change.
    shifted = pitch_classes(stretch(wav, RATE, 1.2, semitones=1.0), RATE)
    assert np.corrcoef(before, shifted)[0, 1] < 0.8


@pytest.mark.parametrize("bpm", [97, 123, 165])
def test_long_clips_read_as_closely(bpm: int) -> None:
    """Over 28 s the period is refined at many multiples: each must land on its own peak."""
    reading = measure_tempo(clip(drums(bpm, 28.0)), RATE, near=bpm * 1.1)
    assert reading.toward(bpm * 1.1) == pytest.approx(bpm, abs=0.1)

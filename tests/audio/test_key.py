"""Key detection with known answers: a chord progression in each of the 24 keys."""

from __future__ import annotations

import torch

from tunesmith.audio.key import detect_key, key_shift
from tunesmith.testing.signals import RATE, drums, progression


def test_the_key_is_right_on_at_least_22_of_24_keys() -> None:
    right = []
    for mode in ("major", "minor"):
        for tonic in range(12):
            wav = torch.from_numpy(progression(tonic, mode, 0.5))[None]
            found = detect_key(wav, RATE)
            right.append((found.tonic, found.mode) == (tonic, mode))
    assert sum(right) >= 22, f"{sum(right)} of 24 keys right"


def test_drums_over_chords_keep_their_key() -> None:
    chords = progression(2, "major", 1.0)  # D major
    mix = chords + drums(120, chords.size / RATE)[: chords.size]
    found = detect_key(torch.from_numpy(mix)[None], RATE)
    assert (found.tonic, found.mode) == (2, "major") and found.confidence > 0.5


def test_silence_has_no_confident_key() -> None:
    assert detect_key(torch.zeros(1, RATE), RATE).confidence == 0.0


def test_shifts_go_the_short_way_round() -> None:
    assert key_shift(0, 2) == 2 and key_shift(0, 10) == -2 and key_shift(11, 0) == 1
    assert all(-6 <= key_shift(a, b) <= 5 for a in range(12) for b in range(12))

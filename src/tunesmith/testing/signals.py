"""Music with known answers, made with numpy: drum patterns at a known tempo, chord
progressions in a known key, and both together. For tests and benchmarks (no downloads).
"""

from __future__ import annotations

import numpy as np

RATE = 32000
MAJOR_STEPS = (0, 2, 4, 5, 7, 9, 11)
MINOR_STEPS = (0, 2, 3, 5, 7, 8, 10)


def drums(
    bpm: float, seconds: float, rate: int = RATE, *, start: float = 0.05, seed: int = 0
) -> np.ndarray:
    """A rock beat, mono float32 [N]: kick on beats 1 and 3, snare on 2 and 4, hi-hat on every
    eighth note, the first beat `start` seconds in."""
    rng = np.random.default_rng(seed)
    n = round(seconds * rate)
    out = np.zeros(n, dtype=np.float64)
    t = np.arange(round(0.25 * rate)) / rate
    kick = np.sin(2 * np.pi * (50 * t + (100 / 30) * (1 - np.exp(-30 * t)))) * np.exp(-18 * t)
    snare = 0.5 * rng.standard_normal(t.size) * np.exp(-25 * t) + 0.4 * np.sin(
        2 * np.pi * 190 * t
    ) * np.exp(-30 * t)
    hat = 0.25 * rng.standard_normal(t.size) * np.exp(-120 * t)
    beat = 60.0 / bpm
    for k in range(int((seconds - start) / beat) + 1):
        _add(out, start + k * beat, kick if k % 2 == 0 else snare, rate)
        _add(out, start + k * beat, hat, rate)
        _add(out, start + (k + 0.5) * beat, 0.7 * hat, rate)
    return (0.5 * out).astype(np.float32)


def progression(
    tonic: int, mode: str, seconds_per_chord: float, chords: int = 4, rate: int = RATE
) -> np.ndarray:
    """I-IV-V-I (major) or i-iv-V-i (minor, the dominant's leading tone raised), repeated to
    `chords` chords, each a struck triad over its root an octave down, with five harmonics:
    mono float32 [N]. `tonic` is the pitch class (0 = C)."""
    steps = MAJOR_STEPS if mode == "major" else MINOR_STEPS
    degrees = [0, 3, 4, 0]
    parts = []
    for i in range(chords):
        degree = degrees[i % 4]
        notes = [steps[(degree + j) % 7] + 12 * ((degree + j) // 7) for j in (0, 2, 4)]
        if degree == 4 and mode == "minor":
            notes[1] += 1  # the raised leading tone of harmonic minor
        root = 48 + tonic
        chord = 0.8 * _tone(root - 12 + notes[0], seconds_per_chord, rate)
        for note in notes:
            chord += 0.5 * _tone(root + note, seconds_per_chord, rate)
        parts.append(chord)
    return (0.2 * np.concatenate(parts)).astype(np.float32)


def song(
    bpm: float, tonic: int, mode: str, bars: int, rate: int = RATE, start: float = 0.05
) -> np.ndarray:
    """Drums and a chord a bar, in time, `bars` 4/4 bars long (plus `start`): mono float32."""
    bar = 4 * 60.0 / bpm
    beat = drums(bpm, start + bars * bar, rate, start=start)
    chords = progression(tonic, mode, bar, bars, rate)
    offset = round(start * rate)
    beat[offset : offset + chords.size] += chords[: beat.size - offset]
    return beat


def _tone(midi: float, seconds: float, rate: int) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    f = 440.0 * 2 ** ((midi - 69) / 12)
    wave = sum(np.sin(2 * np.pi * f * h * t) / h for h in range(1, 6))
    return wave * np.minimum(1.0, t / 0.01) * np.exp(-1.5 * t)


def _add(out: np.ndarray, at: float, sound: np.ndarray, rate: int) -> None:
    i = round(at * rate)
    if i < out.size:
        end = min(out.size, i + sound.size)
        out[i:end] += sound[: end - i]


def swell(bpm: float, seconds: float, rate: int = RATE, *, start: float = 0.05) -> np.ndarray:
    """A kick on every beat over a held A2-E3 pad that swells from quiet to loud: mono float32.
    Cut anywhere without care it clicks (the pad's phase) and jumps in level (the swell)."""
    n = round(seconds * rate)
    t = np.arange(n) / rate
    pad = sum(np.sin(2 * np.pi * f * h * t) / h for f in (110.0, 164.81) for h in (1, 2, 3))
    out = 0.15 * pad * (0.2 + 0.8 * t / seconds)
    k = np.arange(round(0.25 * rate)) / rate
    kick = np.sin(2 * np.pi * (50 * k + (100 / 30) * (1 - np.exp(-30 * k)))) * np.exp(-18 * k)
    for i in range(int((seconds - start) * bpm / 60.0) + 1):
        _add(out, start + i * 60.0 / bpm, 0.6 * kick, rate)
    return out.astype(np.float32)

"""One clip finished: tempo -> key -> loop -> fades -> level, and a report of what was done and
measured, the same for `generate`, `batch`, `conform` and the Python API.

Fades come after the tempo and the loop so that their seconds are the output's seconds (a
stretch would change them otherwise), and before the level, so the level is the faded clip's.
Tempo and key change in one Rubber Band pass (one resynthesis, not two).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import torch

from ..audio.fades import apply_fades
from ..audio.key import detect_key, key_shift
from ..audio.loops import Loop, make_loop
from ..audio.loudness import normalize_audio
from ..audio.tempo import TempoReading, measure_tempo, require, stretch
from ..errors import InvalidOptionError
from .options import CROSSFADE_BEATS, MAX_TEMPO_FACTOR, FinishOptions, Key

UNCHANGED = 1e-4  # a stretch closer to 1 than this is not worth a resynthesis


@dataclass(frozen=True)
class FinishReport:
    """What finishing measured and did. Tempos are BPM (half or double time resolved toward the
    target), keys are names ("A minor"); None where that was not asked for or not found."""

    tempo_before: float | None = None
    tempo_after: float | None = None
    pulse_clarity: float | None = None  # 0 to 1: how steady the beat was (below 0.2: none)
    stretch: float | None = None  # how many times as fast the audio now plays
    key_detected: str | None = None
    key_confidence: float | None = None
    key_shift: int | None = None  # semitones
    key_after: str | None = None
    loop: dict[str, Any] | None = None  # bars, bpm, seconds, samples, start_seconds, on_beat
    fade_in: float | None = None
    fade_out: float | None = None
    notes: tuple[str, ...] = field(default=())  # what was done, one line each

    def record(self) -> dict[str, Any] | None:
        """The report as the manifest and file tags store it; None if there is nothing to tell."""
        fields = {k: v for k, v in dataclasses.asdict(self).items() if v not in (None, ())}
        if "notes" in fields:
            fields["notes"] = list(fields["notes"])
        return fields or None


@dataclass(frozen=True)
class Finished:
    """A finished clip: `audio` [C, N], the `report`, and its `loop` (None: not a loop)."""

    audio: torch.Tensor
    report: FinishReport
    loop: Loop | None = None
    root: int | None = None  # MIDI note of the key's tonic, for loop files' root note


def finish(wav: torch.Tensor, sample_rate: int, options: FinishOptions | None = None) -> Finished:
    """Finish [C, N] decoded audio as `options` say (see `FinishOptions`): e.g. for the output
    of `MusicGen.generate`, `finish(wav[0], model.sample_rate, FinishOptions(bpm=110, loop=4))`.
    """
    options = options or FinishOptions()
    if wav.dim() != 2 or wav.shape[-1] == 0:
        raise InvalidOptionError(f"expected [channels, samples] audio, got {tuple(wav.shape)}")
    wav = wav.detach().float().cpu()
    seconds = wav.shape[-1] / sample_rate
    options.check_fits(seconds)
    if options.bpm is not None or options.conform_key:
        require("pedalboard")
    state = _State(options, sample_rate)
    reading = state.measure(wav) if options.bpm is not None or options.loop is not None else None
    factor = state.tempo_factor(reading)
    semitones = state.key_change(wav)
    if factor != 1.0 or semitones:
        wav = stretch(wav, sample_rate, factor, semitones)
        if reading is not None and factor != 1.0:
            reading = state.measure(wav, after=True)
        if semitones:
            after = detect_key(wav, sample_rate)
            state.values["key_after"] = str(Key(after.tonic, after.mode))
    loop = None
    if options.loop is not None:
        wav, loop = state.loop(wav, reading)
    if options.fade_in or options.fade_out:
        wav = apply_fades(wav, sample_rate, options.fade_in, options.fade_out)
        state.values.update(fade_in=options.fade_in, fade_out=options.fade_out)
    if options.normalize != "none":
        wav = normalize_audio(wav, sample_rate, options.normalize)
    report = FinishReport(**state.values, notes=tuple(state.notes))
    return Finished(wav, report, loop, state.root)


class _State:
    """What one clip's finishing has measured and said so far."""

    def __init__(self, options: FinishOptions, sample_rate: int) -> None:
        self.options, self.rate = options, sample_rate
        self.values: dict[str, Any] = {}
        self.notes: list[str] = []
        self.root: int | None = None
        self.left_far = False  # the measured tempo was too far from the target to stretch

    def measure(self, wav: torch.Tensor, after: bool = False) -> TempoReading:
        reading = measure_tempo(wav, self.rate, near=self.options.bpm)
        target = self.options.bpm
        bpm = reading.toward(target) if target is not None else reading.bpm
        self.values["tempo_after" if after else "tempo_before"] = _round(bpm)
        if not after:
            self.values["pulse_clarity"] = round(reading.clarity, 3)
        return reading

    def tempo_factor(self, reading: TempoReading | None) -> float:
        """How many times as fast to play the clip to reach the target tempo (1: leave it)."""
        target = self.options.bpm
        if target is None or reading is None:
            return 1.0
        measured = reading.toward(target)
        if measured is None:
            self.notes.append(
                f"tempo: no steady beat found (pulse clarity {reading.clarity:.2f}, below 0.2):"
                " the tempo is left as it is"
            )
            return 1.0
        factor = target / measured
        if max(factor, 1 / factor) > MAX_TEMPO_FACTOR:
            self.notes.append(
                f"tempo: measured {measured:.2f} BPM, more than {MAX_TEMPO_FACTOR:g}x from "
                f"{target:g}: the tempo is left as it is"
            )
            self.left_far = True
            return 1.0
        if abs(factor - 1.0) < UNCHANGED:
            self.notes.append(f"tempo: measured {measured:.2f} BPM, already {target:g}")
            return 1.0
        self.values["stretch"] = round(factor, 5)
        self.notes.append(
            f"tempo: measured {measured:.2f} BPM, stretched x{factor:.4f} to {target:g}"
        )
        return factor

    def key_change(self, wav: torch.Tensor) -> int:
        """Detect the key (when one is asked for); the semitones to shift by to reach it."""
        target = self.options.target_key
        if target is None:
            return 0
        reading = detect_key(wav, self.rate)
        found = Key(reading.tonic, reading.mode)
        self.values.update(key_detected=str(found), key_confidence=round(reading.confidence, 3))
        self.root = 60 + target.tonic if self.options.conform_key else 60 + found.tonic
        if not self.options.conform_key:
            self.notes.append(f"key: detected {found} (asked for {target})")
            return 0
        # A clip in the relative key holds the target's notes already: shift its tonic only
        # as far as the relative key's (A minor -> C major is no shift).
        source = found if found.mode == target.mode else found.relative
        shift = key_shift(source.tonic, target.tonic)
        self.values["key_shift"] = shift
        how = f"shifted {shift:+d} semitones" if shift else "no shift needed"
        self.notes.append(f"key: detected {found}, {how} to {target}")
        return shift

    def loop(
        self, wav: torch.Tensor, reading: TempoReading | None
    ) -> tuple[torch.Tensor, Loop | None]:
        bars, target = self.options.loop, self.options.bpm
        assert bars is not None and reading is not None
        measured = reading.toward(target) if target is not None else reading.bpm
        bpm = measured if target is None or self.left_far else target
        if bpm is None:  # decoded audio is not thrown away for it: say what was not done
            self.notes.append(
                f"loop: none made: no steady beat found (pulse clarity {reading.clarity:.2f}) "
                "and no target tempo (--bpm) to cut it at"
            )
            return wav, None
        beats = reading.beats if reading.bpm is not None else reading.beats[:0]
        looped, loop = make_loop(wav, self.rate, bars, bpm, beats, CROSSFADE_BEATS)
        where = "on a beat" if loop.on_beat else "(no beat to start on)"
        self.values["loop"] = {
            "bars": bars, "bpm": _round(bpm), "samples": loop.length,
            "seconds": round(loop.length / self.rate, 6),
            "start_seconds": round(loop.start / self.rate, 4), "on_beat": loop.on_beat,
        }  # fmt: skip
        self.notes.append(
            f"loop: {bars} bars at {bpm:.2f} BPM, {loop.length / self.rate:.3f} s, cut at "
            f"{loop.start / self.rate:.2f} s {where}"
        )
        return looped, loop


def _round(bpm: float | None) -> float | None:
    return None if bpm is None or not math.isfinite(bpm) else round(bpm, 2)

"""How a clip is finished after decoding: tempo, key, loop, fades and level, with every default
and limit defined here once. Pure Python: the CLI builds these without importing torch.

`FinishOptions` is validated when made, so a bad BPM, key name, bar count or fade is refused in
one line before any model loads or any file is written.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from typing import Any, NamedTuple

from ..errors import InvalidOptionError
from ..options import NORMALIZE_MODES

MIN_BPM, MAX_BPM = 30.0, 300.0
# A reading (half/double time resolved toward the target) further than this factor from the
# target is left as it is: stretching that far would change the music, not just its tempo.
MAX_TEMPO_FACTOR = 1.25
MAX_KEY_SHIFT = 6  # semitones either way: every key is within a tritone of any other
MAX_LOOP_BARS = 256
BEATS_PER_BAR = 4  # loops are counted in 4/4 bars
CROSSFADE_BEATS = 1.0  # a loop's tail is crossfaded into its head over about one beat

# Pitch-class names as the reports write them (0 = C); flats where musicians write them.
PITCH_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
_LETTERS = {"c": 0, "d": 2, "e": 4, "f": 5, "g": 7, "a": 9, "b": 11}
_ACCIDENTALS = {"": 0, "#": 1, "♯": 1, "b": -1, "♭": -1}
_MODES = {"": "major", "maj": "major", "major": "major", "m": "minor", "min": "minor"}
_MODES["minor"] = "minor"
_KEY = re.compile(r"\s*([a-g])\s*(#|♯|b|♭)?\s*-?\s*(major|minor|maj|min|m)?\s*", re.IGNORECASE)


class Key(NamedTuple):
    """A key: its tonic's pitch class (0 = C) and mode ("major" or "minor")."""

    tonic: int
    mode: str

    def __str__(self) -> str:
        return f"{PITCH_NAMES[self.tonic]} {self.mode}"

    @property
    def relative(self) -> Key:
        """The relative key: the same notes in the other mode (A minor <-> C major)."""
        if self.mode == "minor":
            return Key((self.tonic + 3) % 12, "major")
        return Key((self.tonic - 3) % 12, "minor")


def parse_key(text: str) -> Key:
    """A key from its name: "A minor", "Am", "F# major", "Bb", "c#m", "Eb maj" (no mode: major)."""
    match = _KEY.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise InvalidOptionError(
            f"unknown key {text!r}: give a note A-G, optionally # or b, then major or minor "
            "(e.g. 'A minor', 'F# major', 'Bbm')"
        )
    letter, accidental, mode = match.groups()
    if mode == "M":  # "CM" is C major in chord symbols; "Cm" is C minor
        mode = "maj"
    tonic = (_LETTERS[letter.lower()] + _ACCIDENTALS[accidental or ""]) % 12
    return Key(tonic, _MODES[(mode or "").lower()])


def check_bpm(value: Any, name: str = "bpm") -> float:
    """A tempo in [MIN_BPM, MAX_BPM] beats per minute, as a float."""
    if not _is_number(value) or not MIN_BPM <= value <= MAX_BPM:
        raise InvalidOptionError(
            f"{name} must be a tempo from {MIN_BPM:g} to {MAX_BPM:g} BPM, got {value!r}"
        )
    return float(value)


@dataclass(frozen=True)
class FinishOptions:
    """What to do to decoded audio before it is written, in this order: stretch to `bpm`
    (measured with a beat tracker; half and double time resolved toward it), pitch-shift to
    `key` when `conform_key`, cut a seamless loop of `loop` 4/4 bars, fade in and out
    (`fade_in`, `fade_out` seconds, equal power), then level (`normalize`).

    `bpm` and `key` are also hints for the text (`tunesmith.finishing.prompts`); `key` alone
    only detects and reports the key. The defaults leave the audio as it was, but levelled.
    """

    bpm: float | None = None
    key: str | None = None  # kept as its canonical name ("A minor")
    conform_key: bool = False
    loop: int | None = None  # bars
    fade_in: float = 0.0
    fade_out: float = 0.0
    normalize: str = "loudness"

    def __post_init__(self) -> None:
        if self.bpm is not None:
            object.__setattr__(self, "bpm", check_bpm(self.bpm))
        if self.key is not None:
            object.__setattr__(self, "key", str(parse_key(self.key)))
        self.validate()

    @classmethod
    def of(cls, base: FinishOptions | None = None, **changes: Any) -> FinishOptions:
        """Options from `base` (None: the defaults) with keyword `changes`."""
        unknown = sorted(set(changes) - FINISH_FIELDS)
        if unknown:
            raise TypeError(f"unknown finishing option(s) {', '.join(unknown)}")
        return dataclasses.replace(base or cls(), **changes)

    @classmethod
    def from_record(cls, record: dict[str, Any], normalize: str = "loudness") -> FinishOptions:
        """The finishing a manifest's `settings` record holds (other keys are ignored)."""
        fields = {k: v for k, v in record.items() if k in FINISH_FIELDS and k != "normalize"}
        return cls(**fields, normalize=normalize)

    def validate(self) -> None:
        """Raise InvalidOptionError naming the first bad field."""
        if not isinstance(self.conform_key, bool):
            raise InvalidOptionError(f"conform_key must be true or false, got {self.conform_key!r}")
        if self.conform_key and self.key is None:
            raise InvalidOptionError("conform_key needs a key to conform to (--key)")
        loop = self.loop
        if loop is not None and (
            not isinstance(loop, int) or isinstance(loop, bool) or not 1 <= loop <= MAX_LOOP_BARS
        ):
            raise InvalidOptionError(
                f"loop must be a whole number of bars, 1 to {MAX_LOOP_BARS}, got {loop!r}"
            )
        for name in ("fade_in", "fade_out"):
            value = getattr(self, name)
            if not _is_number(value) or value < 0 or math.isinf(value):
                raise InvalidOptionError(f"{name} must be a number of seconds >= 0, got {value!r}")
        if loop is not None and (self.fade_in or self.fade_out):
            raise InvalidOptionError(
                "a loop takes no fade-in or fade-out: a faded loop jumps in level at its seam"
            )
        if self.normalize not in NORMALIZE_MODES:
            raise InvalidOptionError(
                f"unknown normalize mode {self.normalize!r}: choose from {', '.join(NORMALIZE_MODES)}"
            )

    @property
    def target_key(self) -> Key | None:
        return parse_key(self.key) if self.key is not None else None

    @property
    def changes_audio(self) -> bool:
        """Whether anything but the level is asked for."""
        return self != FinishOptions(normalize=self.normalize)

    def loop_seconds(self, bpm: float) -> float:
        """How long the loop is at `bpm`."""
        return (self.loop or 0) * BEATS_PER_BAR * 60.0 / bpm

    def check_fits(self, seconds: float) -> None:
        """Refuse a loop or fades that cannot fit in `seconds` of audio (at `bpm`, when a loop
        is asked for with a target tempo: the measured tempo is not known before decoding)."""
        if self.fade_in + self.fade_out > seconds + 1e-9:
            raise InvalidOptionError(
                f"fade_in {self.fade_in:g}s and fade_out {self.fade_out:g}s together are "
                f"longer than the {seconds:g}s of audio"
            )
        if self.loop is not None and self.bpm is not None:
            needed = self.loop_seconds(self.bpm) + CROSSFADE_BEATS * 60.0 / self.bpm
            if needed > seconds + 1e-9:
                raise InvalidOptionError(
                    f"a loop of {self.loop} bars at {self.bpm:g} BPM needs {needed:.2f}s of audio "
                    f"(with one beat to crossfade); there are {seconds:.2f}s"
                )

    def record(self) -> dict[str, Any] | None:
        """The options a manifest and file tags store (None when only the level is set: the
        level has its own field there)."""
        if not self.changes_audio:
            return None
        fields = dataclasses.asdict(self)
        fields.pop("normalize")
        return fields


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)


FINISH_FIELDS = frozenset(f.name for f in dataclasses.fields(FinishOptions))

"""Every setting a user can give, and its default, defined here once.

`GenerationOptions` is built and validated once per call and passed whole from the CLI, the
prompts file reader and the HTTP schema down to the decode loop; the constants below are the
one list of each kind of choice. Pure Python: the CLI reads its defaults from here without
importing torch.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any

from .errors import InvalidOptionError

DEFAULT_MODEL = "facebook/musicgen-small"
MAX_DURATION = 3600.0  # seconds in one call: long form slides the 30 s window that far
WINDOW_SECONDS = 30.0  # the official checkpoints' window (a stride may not exceed it)
# Each window of a long piece costs a prefill of its context: a tiny stride made an hour
# ~180,000 windows. With strides of 1 s or more, the longest piece takes ~191,000 steps.
MIN_STRIDE = 1.0
MAX_JOB_STEPS = 200_000  # decoder steps one call may take (3600 s at 18 s: 180,600)
QUANTIZE_MODES = ("int8",)  # weight formats `quantize=` takes
# Formats measured and not offered: asking for one says why, not just "unknown".
WITHHELD_QUANTIZE = {
    "int4": "no 4-bit weight format kept the decoder's logits within 6% of float32 "
    "(19.7-31.2%, benchmarks/int4_quality.py), so int8 is the smallest",
}
AUDIO_FORMATS = ("wav", "flac", "mp3", "ogg")  # files tunesmith writes (and the server serves)
WAV_SUBTYPES = ("PCM_16", "PCM_24", "FLOAT")
NORMALIZE_MODES = ("loudness", "peak", "rms", "none")
MAX_TOP_K = 100_000  # past the vocabulary (2048) top-k keeps every token: a sane ceiling
MAX_TEMPERATURE = 100.0
MAX_CFG_SCALE = 100.0


@dataclass(frozen=True)
class Bounds:
    """A setting's allowed range, defined once: GenerationOptions checks it, the CLI meets it
    through GenerationOptions, and the HTTP schema declares it (`as_field`: pydantic's
    ge/gt/le/lt, so /openapi.json documents the same range)."""

    low: float
    high: float
    low_open: bool = False  # the low end itself is refused
    high_open: bool = False

    def holds(self, value: float) -> bool:
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        return above and below

    def as_field(self) -> dict[str, Any]:
        """The range as pydantic's Field arguments."""
        return {
            "gt" if self.low_open else "ge": self.low,
            "lt" if self.high_open else "le": self.high,
        }

    def __str__(self) -> str:
        """As an interval: "(0, 3600]"."""
        low, high = _show(self.low), _show(self.high)
        return f"{'(' if self.low_open else '['}{low}, {high}{')' if self.high_open else ']'}"


# Every GenerationOptions field's range (a test walks each through the options, the CLI and
# the HTTP schema, at and past each end).
BOUNDS: dict[str, Bounds] = {
    "duration": Bounds(0, MAX_DURATION, low_open=True),
    "top_k": Bounds(0, MAX_TOP_K),
    "top_p": Bounds(0, 1),
    "temperature": Bounds(0, MAX_TEMPERATURE, low_open=True),
    "cfg_scale": Bounds(0, MAX_CFG_SCALE),
    "seed": Bounds(0, 2**63, high_open=True),
    "stride": Bounds(MIN_STRIDE, WINDOW_SECONDS),
}


def audio_extension(name: str, what: str = "output") -> str:
    """The format a file name's extension names ("" for none). An extension tunesmith does not
    write is refused (libsndfile would write AIFF for .aiff, or a .wav be added after it),
    so that the CLI and batch rows write only the formats they list."""
    suffix = PurePath(name).suffix.lower().lstrip(".")
    if suffix and suffix not in AUDIO_FORMATS:
        listed = ", ".join(f".{f}" for f in AUDIO_FORMATS[:-1]) + f" or .{AUDIO_FORMATS[-1]}"
        raise InvalidOptionError(
            f"{what} {name!r} ends in .{suffix}, which tunesmith does not write: end it in {listed}"
        )
    return suffix


def check_quantize(mode: str | None) -> str | None:
    """`mode` if `quantize=` takes it (None: full precision), else InvalidOptionError."""
    if mode is None or mode in QUANTIZE_MODES:
        return mode
    why = WITHHELD_QUANTIZE.get(mode)
    if why:
        raise InvalidOptionError(f"quantize {mode!r} is not offered: {why}")
    raise InvalidOptionError(f"unknown quantize {mode!r}: choose from {', '.join(QUANTIZE_MODES)}")


@dataclass(frozen=True)
class GenerationOptions:
    """How to sample, validated when made. Defaults follow audiocraft's MusicGen.

    `top_k=1` is greedy decoding, `top_k=0` turns top-k off; `top_p=0` turns nucleus sampling
    off; `seed=None` draws a fresh seed for each call.
    """

    duration: float = 8.0  # seconds of new music
    top_k: int = 250
    top_p: float = 0.0
    temperature: float = 1.0
    cfg_scale: float = 3.0  # classifier-free guidance (1 = none)
    seed: int | None = None
    stride: float = 18.0  # seconds each new window adds past the first (long form)

    def __post_init__(self) -> None:
        self.validate()

    @classmethod
    def of(cls, base: GenerationOptions | float | None = None, **changes: Any) -> GenerationOptions:
        """Options from `base` (options, a duration in seconds, or None for the defaults) with
        keyword `changes`; an unknown name is a TypeError, as for any keyword argument."""
        unknown = sorted(set(changes) - FIELDS)
        if unknown:
            raise TypeError(f"unknown generation option(s) {', '.join(unknown)}: use {_fields()}")
        if isinstance(base, GenerationOptions):
            return dataclasses.replace(base, **changes) if changes else base
        if base is not None:
            changes = {"duration": base, **changes}
        return cls(**changes)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> GenerationOptions:
        """From a record holding these fields (other keys are ignored)."""
        return cls(**{k: v for k, v in values.items() if k in FIELDS})

    def validate(self) -> None:
        """Raise InvalidOptionError naming the first bad field and its range (BOUNDS)."""
        for name, (whole, kind, hint) in _KINDS.items():
            value = getattr(self, name)
            if value is None and name == "seed":
                continue
            is_kind = _is_integer(value) if whole else _is_real(value)
            if not is_kind or not BOUNDS[name].holds(value):
                raise InvalidOptionError(
                    f"{name} must be {kind} in {BOUNDS[name]}{hint}, got {value!r}"
                )


# Each field in order: whether it takes whole numbers only, and how a refusal describes it
# and its special values.
_KINDS: dict[str, tuple[bool, str, str]] = {
    "duration": (False, "a number of seconds", ""),
    "top_k": (True, "an integer", " (1 = greedy, 0 = off)"),
    "top_p": (False, "a number", " (0 = off)"),
    "temperature": (False, "a number", " (use top_k=1 for greedy)"),
    "cfg_scale": (False, "a number", " (1 = no guidance)"),
    "seed": (True, "an integer", " (or None: a fresh seed each call)"),
    "stride": (
        False,
        "a number of seconds",
        " (each window of a long piece costs a prefill; a call takes at most "
        f"{MAX_JOB_STEPS} decoder steps)",
    ),
}


def _fields() -> str:
    return ", ".join(f.name for f in dataclasses.fields(GenerationOptions))


def _is_real(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and not math.isnan(x)


def _show(x: float) -> str:
    """A bound as people write it: 2**63 for the seed's, else the shortest form."""
    if isinstance(x, int) and x > 2**32 and x & (x - 1) == 0:
        return f"2**{x.bit_length() - 1}"
    return f"{x:g}"


def _is_integer(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


DEFAULTS = GenerationOptions()
FIELDS = frozenset(f.name for f in dataclasses.fields(GenerationOptions))

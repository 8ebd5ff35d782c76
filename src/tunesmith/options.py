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
        """Raise InvalidOptionError naming the first bad field."""
        d = self.duration
        if not _is_real(d) or d <= 0:
            raise InvalidOptionError(f"duration must be a positive number of seconds, got {d!r}")
        if math.isinf(d):
            raise InvalidOptionError("duration must be finite")
        if d > MAX_DURATION + 1e-9:
            raise InvalidOptionError(
                f"duration {d:g}s is longer than the {MAX_DURATION:g}s allowed"
            )
        if not _is_real(self.stride) or not self.stride >= MIN_STRIDE:
            raise InvalidOptionError(
                f"stride must be at least {MIN_STRIDE:g} s (each window of a long piece costs a "
                f"prefill: a job may take at most {MAX_JOB_STEPS} decoder steps), "
                f"got {self.stride!r}"
            )
        if not isinstance(self.top_k, int) or isinstance(self.top_k, bool) or self.top_k < 0:
            raise InvalidOptionError(f"top_k must be an integer >= 0 (0 = off), got {self.top_k!r}")
        if not _is_real(self.top_p) or not 0.0 <= self.top_p <= 1.0:
            raise InvalidOptionError(f"top_p must be in [0, 1] (0 = off), got {self.top_p!r}")
        if not _is_real(self.temperature) or self.temperature <= 0:
            raise InvalidOptionError(
                f"temperature must be > 0, got {self.temperature!r} (use top_k=1 for greedy)"
            )
        if not _is_real(self.cfg_scale) or math.isinf(self.cfg_scale):
            raise InvalidOptionError(f"cfg_scale must be a finite number, got {self.cfg_scale!r}")
        if self.seed is not None and (
            not isinstance(self.seed, int)
            or isinstance(self.seed, bool)
            or not 0 <= self.seed < 2**63
        ):
            raise InvalidOptionError(f"seed must be an integer in [0, 2**63), got {self.seed!r}")


def _fields() -> str:
    return ", ".join(f.name for f in dataclasses.fields(GenerationOptions))


def _is_real(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and not math.isnan(x)


DEFAULTS = GenerationOptions()
FIELDS = frozenset(f.name for f in dataclasses.fields(GenerationOptions))

"""Generation settings: one frozen dataclass, validated once, passed on every call."""

from __future__ import annotations

import math
from dataclasses import dataclass

from .errors import InvalidOptionError

MAX_DURATION = 3600.0  # seconds in one call: long form slides the 30 s window that far
QUANTIZE_MODES = ("int8",)  # weight formats `quantize=` takes


@dataclass(frozen=True)
class GenerationOptions:
    """How to sample. Defaults follow audiocraft's MusicGen.

    `top_k=1` is greedy decoding; `top_p=0` turns nucleus sampling off; `seed=None` draws a
    fresh seed for each call.
    """

    duration: float = 8.0
    top_k: int = 250
    top_p: float = 0.0
    temperature: float = 1.0
    cfg_scale: float = 3.0
    seed: int | None = None
    stride: float = 18.0  # seconds each new window adds past the first (long form)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self, max_duration: float | None = None) -> None:
        """Raise InvalidOptionError naming the first bad field."""
        d = self.duration
        if not isinstance(d, (int, float)) or isinstance(d, bool) or math.isnan(d) or d <= 0:
            raise InvalidOptionError(f"duration must be a positive number of seconds, got {d!r}")
        if math.isinf(d):
            raise InvalidOptionError("duration must be finite")
        if max_duration is not None and d > max_duration + 1e-9:
            raise InvalidOptionError(
                f"duration {d:g}s is longer than the {max_duration:g}s allowed"
            )
        if not _is_real(self.stride) or not self.stride > 0:
            raise InvalidOptionError(
                f"stride must be a positive number of seconds, got {self.stride!r}"
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


def _is_real(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and not math.isnan(x)

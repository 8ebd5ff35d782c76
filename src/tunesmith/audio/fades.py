"""Equal-power fades at a clip's ends, applied to decoded audio before it is levelled.

An equal-power curve (gain sin(pi/2 * t) in, cos(pi/2 * t) out, t from 0 to 1 over the fade)
keeps the perceived loudness changing evenly, where a linear ramp sounds as if it waits and
then drops. The curves are the two halves of a crossfade whose gains' squares add to 1: the
same curves join a loop's tail to its head (`tunesmith.audio` loops).
"""

from __future__ import annotations

import math

import torch

from ..errors import InvalidOptionError


def equal_power(n: int, *, rising: bool, device: torch.device | None = None) -> torch.Tensor:
    """Gains [n] from 0 to 1 (rising) or 1 to 0 (falling) on a quarter sine; their squares
    and those of the opposite curve sum to 1 at every sample."""
    t = (torch.arange(n, dtype=torch.float64, device=device) + 0.5) / max(n, 1)
    gains = torch.sin(t * (math.pi / 2))
    return (gains if rising else gains.flip(0)).float()


def check_fades(fade_in: float, fade_out: float, seconds: float | None = None) -> None:
    """Fades are finite seconds >= 0 and, with the clip's length known, fit in it together."""
    for name, value in (("fade_in", fade_in), ("fade_out", fade_out)):
        if (
            not isinstance(value, (int, float))
            or isinstance(value, bool)
            or not math.isfinite(value)
            or value < 0
        ):
            raise InvalidOptionError(f"{name} must be a number of seconds >= 0, got {value!r}")
    if seconds is not None and fade_in + fade_out > seconds + 1e-9:
        raise InvalidOptionError(
            f"fade_in {fade_in:g}s and fade_out {fade_out:g}s together are longer than the "
            f"{seconds:g}s clip"
        )


def apply_fades(
    wav: torch.Tensor, sample_rate: int, fade_in: float = 0.0, fade_out: float = 0.0
) -> torch.Tensor:
    """[..., N] audio with an equal-power fade over its first `fade_in` and last `fade_out`
    seconds (a new tensor; 0 leaves that end as it is)."""
    n = wav.shape[-1]
    check_fades(fade_in, fade_out, n / sample_rate)
    out = wav.detach().float().clone()
    head, tail = round(fade_in * sample_rate), round(fade_out * sample_rate)
    if head:
        out[..., :head] *= equal_power(head, rising=True, device=out.device)
    if tail:
        out[..., n - tail :] *= equal_power(tail, rising=False, device=out.device)
    return out

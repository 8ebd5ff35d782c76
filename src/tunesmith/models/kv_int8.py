"""An int8 self-attention cache: each frame's 64 keys (or values) of a head as int8 with one
float32 scale, a little over half the bytes of float16. At 16 rows and 500 frames the keys
and values are two thirds of what a musicgen-small step reads, and the step reads them at the
memory's speed.

The rounding is the C++ step's (`kernels/cpu/csrc/decoder.h`, `store`) to the bit: the frames
a prefill writes here and those the step writes there are the same bytes.
"""

from __future__ import annotations

import torch


def quantize(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x [..., hd] float -> (int8 [..., hd], scales [...] float32): q = round(x * 127 / m)
    (to nearest even) and the scale m / 127, m the largest |x| of each vector."""
    x = x.float()
    top = x.abs().amax(dim=-1)
    inv = torch.where(top > 0, 127.0 / top, torch.zeros_like(top))
    q = torch.round(x * inv[..., None]).to(torch.int8)
    return q, top / 127.0


def dequantize(q: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """The float32 vectors an int8 cache holds: q [..., hd] x scales [...]."""
    return q.float() * scales[..., None]

"""Python bindings of the CPU ops (`csrc/ops.cpp`); each needs `build.available()` first.

The ops take float32 activations and the weights in `layout`'s packed form:
- `int8_linear`: x [M, K] @ int8 weight.T x per-row scales (GELU in the kernel if asked:
  torch's own GELU on a few thousand values costs more in thread start-up than arithmetic);
- `fp32_linear`: x [M, K] @ float32 weight.T;
- `attend_one`: one query's attention over a float16 KV cache;
- `decoder_step`: a whole decoder's one-frame step (see `tunesmith.engine.cpu_step`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch


def int8_linear(
    x: torch.Tensor, packed: torch.Tensor, scales: torch.Tensor, kc: int, gelu: bool = False
) -> torch.Tensor:
    """x float32 [M, K] (contiguous) -> float32 [M, N], GELU applied if `gelu`."""
    return torch.ops.tunesmith.int8_linear(x, packed, scales, kc, gelu)


def fp32_linear(x: torch.Tensor, packed: torch.Tensor, n: int, kc: int) -> torch.Tensor:
    """x float32 [M, K] (contiguous) -> float32 [M, N]."""
    return torch.ops.tunesmith.fp32_linear(x, packed, n, kc)


def attend_one(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, n: int, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Attention of q [B, H, 1, hd] float32 over the first n frames of k, v [B, H, T, hd]
    float16, with an optional additive mask [B, n] float32 -> [B, H, 1, hd] float32."""
    empty = q.new_empty(0) if mask is None else mask
    return torch.ops.tunesmith.attend_one(q, k, v, n, empty)


def decoder_step(
    weights: list[torch.Tensor],
    dims: list[int],
    sizes: list[int],
    eps: float,
    x: torch.Tensor,
    position: int,
    kv: list[torch.Tensor],
    mask: torch.Tensor,
    cross_rows: int,
    threads: int,
) -> torch.Tensor:
    """One frame x [B, D] through every layer and head -> logits [B, K, V] float32, on at
    most `threads` threads (and at most torch's count)."""
    return torch.ops.tunesmith.decoder_step(
        weights, dims, sizes, eps, x, position, kv, mask, cross_rows, threads
    )


# Output shapes of the ops that a compiled step traces (the schemas are in ops.cpp).
FAKES: dict[str, Callable[..., torch.Tensor]] = {
    "tunesmith::int8_linear": lambda x, packed, scales, kc, gelu=False: x.new_empty(
        x.shape[0], scales.shape[0]
    ),
    "tunesmith::fp32_linear": lambda x, packed, n, kc: x.new_empty(x.shape[0], n),
    "tunesmith::attend_one": lambda q, k, v, n, mask: torch.empty_like(
        q, memory_format=torch.contiguous_format
    ),
}


def register_fakes() -> None:
    """Register `FAKES` once the ops are loaded (torch refuses a fake for an unknown op)."""
    for name, fake in FAKES.items():
        _register(name, fake)


def _register(name: str, fake: Callable[..., Any]) -> None:
    torch.library.register_fake(name)(fake)

"""The packed weight layout the matrix kernels read: [K/kc][N/4][kc/16][4][16].

A block of 4 output rows x 16 inputs is one 64-byte cache line (int8) and the blocks follow
each other K-chunk by K-chunk, so a thread reads one increasing address range (see
csrc/int8_product.h). Weights are packed once, at load time, and unpacked only for torch's
GEMM on many rows.
"""

from __future__ import annotations

import torch

CHUNK = 1024  # input columns per pass (the activations of one pass stay in L1)
MIN_CHUNK = 256
ROWS, COLS = 4, 16  # a packed block: 4 output rows x 16 inputs


def chunk_for(in_features: int) -> int | None:
    """Columns per pass for a K-wide input, or None where the kernels do not apply."""
    if in_features % COLS:
        return None
    if in_features <= CHUNK:
        return in_features
    # The widest chunk that divides K (musicgen-medium's 1536: two of 768), if not so narrow
    # that the passes' partial sums cost more than torch's kernel.
    for chunk in range(CHUNK, MIN_CHUNK - 1, -COLS):
        if in_features % chunk == 0:
            return chunk
    return None


def fits(out_features: int, in_features: int) -> bool:
    """A [out, in] weight the kernels can read (after packing)."""
    return chunk_for(in_features) is not None and out_features % ROWS == 0


def pack(weight: torch.Tensor, kc: int) -> torch.Tensor:
    """[N, K] -> the kernels' layout [K/kc, N/4, kc/16, 4, 16] (flat, contiguous)."""
    n, k = weight.shape
    blocks = weight.view(n // ROWS, ROWS, k // kc, kc // COLS, COLS)
    return blocks.permute(2, 0, 3, 1, 4).contiguous().view(-1)


def unpack(packed: torch.Tensor, n: int, k: int, kc: int) -> torch.Tensor:
    """The inverse of `pack`: back to [N, K]."""
    blocks = packed.view(k // kc, n // ROWS, kc // COLS, ROWS, COLS)
    return blocks.permute(1, 3, 0, 2, 4).reshape(n, k)

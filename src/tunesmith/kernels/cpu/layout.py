"""The packed weight layout the matrix kernels read: [K/kc][N/R][kc/C][R][C].

A block of R output rows x C inputs is one 64-byte cache line (int8) and the blocks follow
each other K-chunk by K-chunk, so a thread reads one increasing address range (see
csrc/int8_product.h). The blocks are 4 x 16 (`STANDARD`), except the 512-bit VNNI build's
int8 blocks, 16 x 4 (its `Kernels.int8_block`). Weights are packed once, at load time, and
unpacked only for torch's GEMM on many rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

CHUNK = 1024  # input columns per pass (the activations of one pass stay in L1)
MIN_CHUNK = 256
ROWS, COLS = 4, 16  # a standard packed block: 4 output rows x 16 inputs


@dataclass(frozen=True)
class Block:
    """The shape of one packed block: `rows` outputs x `cols` inputs."""

    rows: int = ROWS
    cols: int = COLS


STANDARD = Block()


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


def fits(out_features: int, in_features: int, block: Block = STANDARD) -> bool:
    """A [out, in] weight the kernels can read (after packing in `block`s)."""
    return chunk_for(in_features) is not None and out_features % block.rows == 0


def pack(weight: torch.Tensor, kc: int, block: Block = STANDARD) -> torch.Tensor:
    """[N, K] -> the kernels' layout [K/kc, N/R, kc/C, R, C] (flat, contiguous)."""
    n, k = weight.shape
    r, c = block.rows, block.cols
    blocks = weight.view(n // r, r, k // kc, kc // c, c)
    return blocks.permute(2, 0, 3, 1, 4).contiguous().view(-1)


def unpack(packed: torch.Tensor, n: int, k: int, kc: int, block: Block = STANDARD) -> torch.Tensor:
    """The inverse of `pack`: back to [N, K]."""
    r, c = block.rows, block.cols
    blocks = packed.view(k // kc, n // r, kc // c, r, c)
    return blocks.permute(1, 3, 0, 2, 4).reshape(n, k)

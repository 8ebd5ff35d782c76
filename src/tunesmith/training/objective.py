"""MusicGen's training objective: next-token cross-entropy over the delayed codebook streams.

A batch of code sequences [K, T] becomes, through the delay pattern (`generation.delay`),
one sequence of 1 + T + max_delay positions per row: the decoder reads positions 0 .. L - 2
and predicts 1 .. L - 1. Only the positions that hold a real code count (not the delay
padding, not the padding of a shorter row). The loss of each codebook is the mean over its
real positions in the whole batch, and the codebooks' losses are averaged: audiocraft's
solver and transformers' `labels=` loss both compute exactly this.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..generation.delay import apply_delay


@dataclass(frozen=True)
class DelayedBatch:
    """Decoder inputs [B, K, L], targets [B, K, L] and where a target is a real code."""

    inputs: torch.Tensor
    targets: torch.Tensor
    valid: torch.Tensor

    @property
    def tokens(self) -> int:
        """Real codes predicted (what tokens per second counts)."""
        return int(self.valid.sum())

    def to(self, device: torch.device) -> DelayedBatch:
        return DelayedBatch(self.inputs.to(device), self.targets.to(device), self.valid.to(device))


def delayed_batch(codes: Sequence[torch.Tensor], special: int, channels: int = 1) -> DelayedBatch:
    """Code sequences [K, T_i] (lengths may differ) -> one delayed, padded training batch."""
    if not codes:
        raise ValueError("a batch needs at least one sequence")
    longest = max(c.shape[-1] for c in codes)
    k = codes[0].shape[0]
    padded = torch.full((len(codes), k, longest), special, dtype=torch.long)
    real = torch.zeros((len(codes), k, longest), dtype=torch.bool)
    for row, c in enumerate(codes):
        padded[row, :, : c.shape[-1]] = c.long()
        real[row, :, : c.shape[-1]] = True
    seq = apply_delay(padded, special, channels)
    # The same shifts applied to "is real" say which delayed positions hold a real code.
    valid = apply_delay(real.long(), 0, channels).bool()
    return DelayedBatch(inputs=seq[:, :, :-1], targets=seq[:, :, 1:], valid=valid[:, :, 1:])


def codebook_loss(logits: torch.Tensor, batch: DelayedBatch) -> torch.Tensor:
    """logits [B, K, L, V] -> the mean over codebooks of each codebook's mean cross-entropy
    over its real positions (float32)."""
    b, k, length, vocab = logits.shape
    # One cross-entropy over every position (per-codebook slices of the logits would each
    # cost a full-size zero gradient in the backward pass), then each codebook's mean.
    targets = batch.targets.masked_fill(~batch.valid, 0)
    each = F.cross_entropy(logits.reshape(-1, vocab).float(), targets.reshape(-1), reduction="none")
    valid = batch.valid.to(each.dtype)
    per_codebook = (each.view(b, k, length) * valid).sum(dim=(0, 2)) / valid.sum(dim=(0, 2))
    return per_codebook.mean()

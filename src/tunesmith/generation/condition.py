"""The encoded text a decode runs on (`MusicGen.condition` makes it)."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class TextCondition:
    """Projected text states [B, S, D] and mask [B, S]; an all-zero row is unconditional."""

    states: torch.Tensor
    mask: torch.Tensor

    @property
    def batch(self) -> int:
        return self.states.shape[0]

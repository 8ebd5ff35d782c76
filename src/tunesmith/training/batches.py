"""Training batches: a resumable data order, captions as text states, text dropout."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..generation.loop import TextCondition
from ..musicgen import MusicGen
from .codes import Segment
from .objective import DelayedBatch, delayed_batch


@dataclass
class EpochOrder:
    """Segments in a new seeded order each epoch; (epoch, position) says where it stands, so
    a resumed run reads the same batches the uninterrupted one would have."""

    count: int
    batch_size: int
    seed: int
    epoch: int = 0
    position: int = 0

    def next_batch(self) -> list[int]:
        if self.position >= self.count:
            self.epoch, self.position = self.epoch + 1, 0
        order = torch.randperm(self.count, generator=torch.Generator().manual_seed(
            self.seed * 100_003 + self.epoch
        ))  # fmt: skip
        chosen = order[self.position : self.position + self.batch_size].tolist()
        self.position += len(chosen)
        return chosen

    @property
    def progress(self) -> float:
        """Epochs done, as a fraction."""
        return self.epoch + self.position / max(1, self.count)


class TextStates:
    """Each caption's frozen T5 states, computed once (T5 is not trained)."""

    def __init__(self, model: MusicGen) -> None:
        self.model = model
        self._known: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def __call__(self, captions: Sequence[str], dropped: Sequence[bool]) -> TextCondition:
        """States [B, S, D] and mask [B, S] of the captions; a dropped row is the all-zero
        unconditional state (what classifier-free guidance needs at inference)."""
        rows = [self._one(c) for c in captions]
        longest = max(s.shape[0] for s, _ in rows)
        width = rows[0][0].shape[-1]
        states = torch.zeros(len(rows), longest, width, device=self.model.device)
        mask = torch.zeros(len(rows), longest, dtype=torch.long, device=self.model.device)
        for i, ((s, m), drop) in enumerate(zip(rows, dropped, strict=True)):
            if not drop:
                states[i, : s.shape[0]] = s
                mask[i, : m.shape[0]] = m
        return TextCondition(states=states, mask=mask)

    def _one(self, caption: str) -> tuple[torch.Tensor, torch.Tensor]:
        if caption not in self._known:
            text = self.model.condition([caption])
            self._known[caption] = (text.states[0].clone(), text.mask[0].clone())
        return self._known[caption]


def make_batch(
    segments: Sequence[Segment],
    indices: Sequence[int],
    special: int,
    channels: int,
    texts: TextStates,
    text_dropout: float,
    generator: torch.Generator | None = None,
) -> tuple[DelayedBatch, TextCondition]:
    chosen = [segments[i] for i in indices]
    batch = delayed_batch([s.codes for s in chosen], special, channels)
    dropped = [False] * len(chosen)
    if text_dropout > 0:  # no draw where nothing is dropped (validation): the stream stays put
        dropped = [bool(d < text_dropout) for d in torch.rand(len(chosen), generator=generator)]
    return batch, texts([s.caption for s in chosen], dropped)

"""Transitions: over a span of steps after a section boundary, the previous text's guided
logits blend into the new one's.

During the span both texts run as rows of one batch, so that each step reads the weights
once for both (`Blend` lays the rows out). The new text's weight moves linearly, one step at
a time, from 0 at the boundary's first step to 1 after `frames` steps; then the previous
text's rows leave the batch (`Blend.kept`) and the window goes on as any other.

The state is a structure of its own (`Transition`, made per section; `Blend`, per window),
not loop arguments: the decode loop asks it for the rows, the text and each step's logits.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .condition import TextCondition


@dataclass(frozen=True)
class Transition:
    """A section's blend from the previous text: `previous` (its text, [B, S, D]) guided
    with `previous_scale`, over `frames` steps counted from the section's first new frame;
    `start` is where this window's first step falls in that count."""

    previous: TextCondition
    previous_scale: float
    frames: int
    start: int = 0

    def __post_init__(self) -> None:
        if self.frames < 1:
            raise ValueError(f"a transition spans at least one step, got {self.frames}")

    def weight(self, step: int) -> float:
        """The new text's weight at this window's `step`-th sampling step (0 = its first)."""
        return min(1.0, max(0, self.start + step) / self.frames)

    def later(self, frames: int) -> Transition | None:
        """The rest of the span for a window starting `frames` new frames into the section
        (None where the span is over by then)."""
        return dataclasses.replace(self, start=frames) if frames < self.frames else None

    def blend(self, batch: int, scale: float) -> Blend:
        """The rows of a window whose own text is guided with `scale` (1 = not guided)."""
        return Blend(self, batch, scale)


@dataclass(frozen=True)
class Blend:
    """One window's batch while a transition runs: B rows of the previous text, then B of
    the new one, then (if either text is guided) B unconditional rows, which both share: an
    unconditional row sees no text, so the two texts' would be the same."""

    transition: Transition
    batch: int
    scale: float  # the new text's guidance (1 = none)

    @property
    def guided(self) -> bool:
        return self.scale != 1.0 or self.transition.previous_scale != 1.0

    @property
    def rows(self) -> int:
        return (3 if self.guided else 2) * self.batch

    @property
    def kept(self) -> slice:
        """The rows the window keeps once the span is over: the new text's (and the
        unconditional ones if the new text is guided), a contiguous run."""
        b = self.batch
        return slice(b, 3 * b if self.scale != 1.0 else 2 * b)

    @property
    def kept_text(self) -> slice:
        """The kept rows' text rows."""
        return slice(self.batch, 2 * self.batch)

    def text(self, new: TextCondition) -> TextCondition:
        """The batch's text rows: the previous text's, then `new`'s (padded to one length)."""
        return stack_texts(self.transition.previous, new)

    def over(self, step: int) -> bool:
        """Whether the span is over at this window's `step`-th sampling step."""
        return self.transition.weight(step) >= 1.0

    def logits(self, logits: torch.Tensor, step: int) -> torch.Tensor:
        """The step's logits [rows, K, V] -> the blended logits [B, K, V] at `step`."""
        return blend_logits(
            logits, self.batch, self.transition.previous_scale, self.scale,
            self.transition.weight(step),
        )  # fmt: skip


def blend_logits(
    logits: torch.Tensor, batch: int, previous_scale: float, scale: float, weight: float
) -> torch.Tensor:
    """Rows [previous text, new text, (unconditional)] of B each -> (1 - weight) times the
    previous text's guided logits plus weight times the new one's, each guided as its own
    window would be (`engine.step.guide`): weight 0 gives the previous text's, 1 the new
    one's (finite logits times 0 add exactly nothing)."""
    previous, new = logits[:batch], logits[batch : 2 * batch]
    if previous_scale != 1.0 or scale != 1.0:
        uncond = logits[2 * batch : 3 * batch]
        if previous_scale != 1.0:
            previous = uncond + previous_scale * (previous - uncond)
        if scale != 1.0:
            new = uncond + scale * (new - uncond)
    return (1.0 - weight) * previous + weight * new


def stack_texts(first: TextCondition, second: TextCondition) -> TextCondition:
    """Two texts' rows as one condition: [B1 + B2, S, D], the shorter padded (mask 0)."""
    s = max(first.states.shape[1], second.states.shape[1])

    def padded(text: TextCondition) -> tuple[torch.Tensor, torch.Tensor]:
        extra = s - text.states.shape[1]
        return F.pad(text.states, (0, 0, 0, extra)), F.pad(text.mask, (0, extra))

    (a, mask_a), (b, mask_b) = padded(first), padded(second)
    return TextCondition(states=torch.cat([a, b]), mask=torch.cat([mask_a, mask_b]))

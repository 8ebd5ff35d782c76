"""Making a piece: its sections' windows one after another, as one continuous code
sequence, under one progress bar that names the section being made.

Each section is `generation.loop.iter_frames` with the section's text and options, prompted
with the last `context` frames made (see `plan`), blending the previous text in over its
transition (`generation.transition`); one random stream (the piece's seed) draws for all.
Only the last window's worth of codes is kept between sections: memory does not grow with
the piece.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence
from typing import Any, Protocol

import torch

from ..errors import InvalidOptionError
from ..generation.codec_chunks import StreamDecoder
from ..generation.condition import TextCondition
from ..generation.delay import delays
from ..generation.loop import iter_frames, make_generator
from ..generation.progress import Progress
from ..generation.stream import TokenStream
from ..generation.transition import Transition
from ..options import GenerationOptions
from .plan import PiecePlan, SectionPlan, plan_piece
from .section import Section


class Composer(Protocol):
    """What composing needs of a loaded model (`MusicGen` is one)."""

    @property
    def step(self) -> Any: ...  # the model's decoder step, handed to the decode loop as is

    @property
    def device(self) -> torch.device: ...

    @property
    def frame_rate(self) -> int: ...

    @property
    def max_duration(self) -> float: ...

    @property
    def num_codebooks(self) -> int: ...

    @property
    def audio_channels(self) -> int: ...

    @property
    def config(self) -> Any: ...

    def frames_for(self, duration: float) -> int: ...

    def condition(self, texts: list[str | None]) -> TextCondition: ...


def plan_for(model: Composer, sections: Sequence[Section], options: GenerationOptions) -> PiecePlan:
    """`plan.plan_piece` for this model's frame rate, window and delays; transitions need a
    model whose text is attended to (cross-attention), not a melody model's prefix."""
    plan = plan_piece(
        sections, options, frames_for=model.frames_for, frame_rate=model.frame_rate,
        window_seconds=model.max_duration,
        max_delay=max(delays(model.num_codebooks, model.audio_channels)),
    )  # fmt: skip
    blended = [s.number for s in plan.sections if s.transition]
    if blended and getattr(model.config, "melody", None) is not None:
        raise InvalidOptionError(
            f"section {blended[0]}: transitions need a text-conditioned checkpoint; a melody "
            "checkpoint reads its text as a prefix (use transition 0)"
        )
    return plan


def piece_blocks(model: Composer, plan: PiecePlan) -> Iterator[tuple[SectionPlan, torch.Tensor]]:
    """Each decoder step's new codes [1, K, n] (n >= 0) in order, with the section making
    them."""
    generator = make_generator(plan.options.seed, model.device)
    # The last frames made (at most a window's): what the next section's context reads.
    recent: deque[torch.Tensor] = deque(maxlen=plan.window)
    previous: tuple[TextCondition, float] | None = None
    for section in plan.sections:
        text = model.condition([section.section.text])
        prompt = None
        if section.context:
            prompt = torch.cat(list(recent), dim=2)[:, :, -section.context :]
        transition = None
        if section.transition and previous is not None:
            transition = Transition(previous[0], previous[1], section.transition)
        blocks = iter_frames(
            model.step, text, section.frames, section.options,
            window=plan.window, stride=plan.stride, prompt=prompt, generator=generator,
            transition=transition,
        )  # fmt: skip
        for block in blocks:
            if block.shape[-1]:
                recent.append(block)
            yield section, block
        previous = (text, section.options.cfg_scale)


class PieceStream(TokenStream):
    """A piece's code blocks [1, K, n] in order, one per decoder step, under one progress bar
    over the whole piece that names the section being made (`.section`, its plan)."""

    def __init__(
        self,
        plan: PiecePlan,
        blocks: Iterator[tuple[SectionPlan, torch.Tensor]],
        progress: Progress,
    ) -> None:
        super().__init__(self._named(blocks), None, progress, plan.steps)
        self.plan = plan
        self.section: SectionPlan | None = None

    def _named(self, blocks: Iterator[tuple[SectionPlan, torch.Tensor]]) -> Iterator[torch.Tensor]:
        for section, block in blocks:
            if section is not self.section:
                self.section = section
                self._progress.describe(section.label)
            yield block


def piece_stream(
    model: Composer,
    sections: Sequence[Section],
    options: GenerationOptions | float | None = None,
    progress: Progress = False,
    **settings: Any,
) -> PieceStream:
    """The stream of a piece made of `sections` with the piece's `options` (their fields
    may be given as keywords; the duration is the sections'), checked before any step."""
    plan = plan_for(model, sections, GenerationOptions.of(options, **settings))
    return PieceStream(plan, piece_blocks(model, plan), progress)


def piece_audio(tokens: PieceStream, decoder: StreamDecoder) -> Iterator[torch.Tensor]:
    """Audio chunks [1, C, n] of a piece as soon as the codec can decode them."""
    with tokens as blocks:
        for block in blocks:
            yield from decoder.push(block)
    tail = decoder.finish()
    if tail is not None:
        yield tail

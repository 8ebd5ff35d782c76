"""The plan of a piece: each section's frames, where it starts, the codes that prompt it and
its transition, in frames of the model that makes it, with the decoder steps it takes.

A section's first window is prompted with the last `context` frames of the piece so far
(default: the window minus the stride, as long form continues) and the section's own text;
past the window, its windows slide as long form's do (`generation.loop.plan_windows`). So
with greedy decoding a section's codes are those `generate_tokens(text, audio_prompt=<those
frames>, prompt_in_output=False, duration=seconds, ...)` gives.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..errors import InvalidOptionError
from ..generation.loop import plan_windows, steps_for
from ..options import GenerationOptions
from .section import Section, check_sections

LABEL_CHARS = 40  # of a section's text, in the progress bar


@dataclass(frozen=True)
class SectionPlan:
    """One section in frames: `start` in the piece, `frames` long, prompted with `context`
    frames of what precedes it, blending the previous text in over `transition` frames,
    made with `options` in `steps` decoder steps."""

    number: int  # 1-based
    count: int  # sections in the piece
    section: Section
    options: GenerationOptions
    start: int
    frames: int
    context: int
    transition: int
    steps: int

    @property
    def label(self) -> str:
        """What a progress bar names: `section 2/3: drums enter, full band`."""
        text = self.section.text
        short = text if len(text) <= LABEL_CHARS else text[: LABEL_CHARS - 3] + "..."
        return f"section {self.number}/{self.count}: {short}"


@dataclass(frozen=True)
class PiecePlan:
    """A piece's sections in order, for a model of `window` frames sliding by `stride`."""

    sections: tuple[SectionPlan, ...]
    options: GenerationOptions  # the piece's own (its seed draws for every section)
    window: int
    stride: int
    frame_rate: int

    @property
    def frames(self) -> int:
        return sum(s.frames for s in self.sections)

    @property
    def steps(self) -> int:
        return sum(s.steps for s in self.sections)


def plan_piece(
    sections: Sequence[Section],
    options: GenerationOptions,
    *,
    frames_for: Callable[[float], int],
    frame_rate: int,
    window_seconds: float,
    max_delay: int,
) -> PiecePlan:
    """Check `sections` (errors name the section) and lay them out in frames (`frames_for`:
    the model's seconds to frames, as `generate` counts them)."""
    check_sections(sections, window_seconds)
    if options.stride > window_seconds:
        raise InvalidOptionError(
            f"stride {options.stride:g}s is longer than the {window_seconds:g}s window"
        )
    window = frames_for(window_seconds)
    stride = min(window, frames_for(options.stride))
    planned: list[SectionPlan] = []
    start = 0
    for number, section in enumerate(sections, 1):
        frames = frames_for(section.seconds)
        seconds = section.context
        wanted = window - stride if seconds is None else round(seconds * frame_rate)
        # What exists, and always fewer frames than the window holds.
        context = min(start, wanted, window - 1)
        transition = min(frames, round(section.transition * frame_rate)) if number > 1 else 0
        steps = steps_for(plan_windows(context, frames, window, stride), max_delay)
        planned.append(
            SectionPlan(
                number=number,
                count=len(sections),
                section=section,
                options=section.options(options),
                start=start,
                frames=frames,
                context=context,
                transition=transition,
                steps=steps,
            )
        )
        start += frames
    total = GenerationOptions.of(options, duration=sum(s.seconds for s in sections))
    return PiecePlan(tuple(planned), total, window, stride, frame_rate)

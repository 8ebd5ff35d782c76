"""A section of a composed piece, and the limits a piece keeps to (defined here once)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

from ..errors import InvalidOptionError, SectionError
from ..options import MAX_DURATION, WINDOW_SECONDS, GenerationOptions

MAX_SECTIONS = 100  # sections in one piece
MAX_PIECE_SECONDS = MAX_DURATION  # a whole piece: as long as one long-form call may be
OVERRIDES = ("cfg_scale", "temperature", "top_k", "top_p")  # settings a section may change


@dataclass(frozen=True)
class Section:
    """One part of a piece: what it sounds like and for how long, validated when made.

    text: the prompt (not empty). seconds: its length. cfg_scale, temperature, top_k, top_p:
    this section's own settings (None: the piece's). transition: seconds after its start
    over which the previous section's guided logits blend into this one's (0: the text
    changes at once; the tokens are drawn with this section's settings). context: seconds of the piece so far that prompt its first window (None: the
    window minus the stride, as long form continues; 0: none, a fresh start).

    >>> Section("soft piano intro", 20)
    Section(text='soft piano intro', seconds=20, cfg_scale=None, temperature=None, top_k=None, top_p=None, transition=0.0, context=None)
    """

    text: str
    seconds: float
    cfg_scale: float | None = None
    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    transition: float = 0.0
    context: float | None = None

    def __post_init__(self) -> None:
        self.validate()

    def validate(self, window: float = WINDOW_SECONDS) -> None:
        """Raise InvalidOptionError naming the first bad field (`window`: the model's, in
        seconds, which a context must be shorter than)."""
        if not isinstance(self.text, str) or not self.text.strip():
            raise InvalidOptionError(f"text must be a non-empty string, got {self.text!r}")
        if not _seconds(self.seconds) or self.seconds <= 0:
            raise InvalidOptionError(f"seconds must be a positive number, got {self.seconds!r}")
        if self.seconds > MAX_PIECE_SECONDS:
            raise InvalidOptionError(
                f"seconds {self.seconds:g} is longer than a piece may be ({MAX_PIECE_SECONDS:g}s)"
            )
        if not _seconds(self.transition) or self.transition < 0:
            raise InvalidOptionError(
                f"transition must be a number of seconds >= 0, got {self.transition!r}"
            )
        if self.transition > self.seconds:
            raise InvalidOptionError(
                f"transition {self.transition:g}s is longer than the section's {self.seconds:g}s"
            )
        if self.context is not None:
            if not _seconds(self.context) or self.context < 0:
                raise InvalidOptionError(
                    f"context must be a number of seconds >= 0, got {self.context!r}"
                )
            if self.context >= window:
                raise InvalidOptionError(
                    f"context {self.context:g}s is not shorter than the model's {window:g}s window"
                )
        GenerationOptions(**self.overrides())  # each override as the options check it

    def overrides(self) -> dict[str, Any]:
        """The settings this section changes, by GenerationOptions field."""
        return {name: getattr(self, name) for name in OVERRIDES if getattr(self, name) is not None}

    def options(self, piece: GenerationOptions) -> GenerationOptions:
        """The piece's options with this section's length and overrides."""
        return GenerationOptions.of(piece, duration=self.seconds, **self.overrides())


FIELDS = tuple(f.name for f in fields(Section))


def check_sections(sections: Sequence[Section], window: float = WINDOW_SECONDS) -> None:
    """A piece's sections as a whole: 1 to MAX_SECTIONS `Section`s, at most
    MAX_PIECE_SECONDS in all, each valid for a `window`-second model, the first without a
    transition (there is nothing before it). A section's error is a SectionError naming it
    (1-based)."""
    if isinstance(sections, (str, bytes, Section)) or not isinstance(sections, Sequence):
        raise InvalidOptionError(
            f"sections must be a list of Section, got {type(sections).__name__}"
        )
    if not sections:
        raise InvalidOptionError("a piece needs at least one section")
    if len(sections) > MAX_SECTIONS:
        raise InvalidOptionError(
            f"{len(sections)} sections: a piece may have at most {MAX_SECTIONS}"
        )
    for number, section in enumerate(sections, 1):
        if not isinstance(section, Section):
            raise SectionError(number, f"expected a Section, got {type(section).__name__}")
        try:
            section.validate(window)
        except InvalidOptionError as err:
            raise SectionError(number, str(err)) from None
    if sections[0].transition > 0:
        raise SectionError(1, "a transition blends from the section before; the first has none")
    total = sum(s.seconds for s in sections)
    if total > MAX_PIECE_SECONDS + 1e-9:
        raise InvalidOptionError(
            f"the sections add up to {total:g}s: a piece may be at most {MAX_PIECE_SECONDS:g}s"
        )


def _seconds(x: object) -> bool:
    """A finite real number (not a bool, not a string)."""
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)

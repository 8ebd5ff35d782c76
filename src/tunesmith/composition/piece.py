"""A piece as files (and requests) give it: a list of sections and the piece's own settings,
read from a mapping, each error naming where it is (the section, the file's line).

    title: Night drive                 # optional: the file's title tag
    seed: 7                            # the piece's settings: seed, top_k, top_p,
    cfg_scale: 3.0                     #   temperature, cfg_scale, stride; model;
    fade_out: 4                        #   fade_in, fade_out; context and transition
    sections:                          #   (defaults for the sections that do not say)
      - {text: soft piano intro, seconds: 20}
      - {text: drums enter, full band, seconds: 40, transition: 4, cfg_scale: 4}

Inline, a section is `SECONDS: TEXT` (`--section "20: soft piano intro"`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

from ..audio.fades import check_fades
from ..errors import InvalidOptionError, SectionError
from ..options import WINDOW_SECONDS, GenerationOptions
from .section import FIELDS, Section, check_sections

SAMPLING = ("seed", "top_k", "top_p", "temperature", "cfg_scale", "stride")  # the piece's
SECTION_DEFAULTS = ("context", "transition")  # for sections that do not give their own
PIECE_KEYS = ("title", "model", *SAMPLING, *SECTION_DEFAULTS, "fade_in", "fade_out", "sections")

Place = tuple[str | int, ...]  # a value's place in the mapping: ("sections", 1, "seconds")
Where = Callable[[Place], str]  # a place as the source names it ("piece.yaml, line 9"), or ""


@dataclass(frozen=True)
class Piece:
    """Sections in order and how to make and finish them: `options` (seed and sampling; the
    duration is the sections'), fades (seconds), the model (None: the default or the
    command line's) and a title."""

    sections: tuple[Section, ...]
    options: GenerationOptions
    fade_in: float = 0.0
    fade_out: float = 0.0
    model: str | None = None
    title: str | None = None

    @property
    def seconds(self) -> float:
        return sum(s.seconds for s in self.sections)

    def check(self, window: float = WINDOW_SECONDS) -> None:
        """The sections as a whole (`check_sections`), the stride against the window and the
        fades against the piece's length."""
        check_sections(self.sections, window)
        if self.options.stride > window:
            raise InvalidOptionError(
                f"stride {self.options.stride:g}s is longer than the {window:g}s window"
            )
        check_fades(self.fade_in, self.fade_out, self.seconds)

    def with_settings(self, **changes: Any) -> Piece:
        """Settings changed (a command line's over a file's): the SAMPLING fields go into
        the options, the others (fade_in, fade_out, model, title) replace the piece's."""
        sampling = {k: v for k, v in changes.items() if k in SAMPLING}
        others = {k: v for k, v in changes.items() if k not in SAMPLING}
        options = GenerationOptions.of(self.options, **sampling)
        return dataclasses.replace(self, options=options, **others)


def nowhere(place: Place) -> str:
    return ""


def piece_from_mapping(
    data: object, where: Where = nowhere, defaults: Mapping[str, Any] | None = None
) -> Piece:
    """A Piece from `data` (as a YAML, JSON or TOML file or a request holds it), checked
    (`Piece.check`); `defaults` (context, transition) replace the mapping's own."""
    if not isinstance(data, Mapping):
        refuse(where, (), f"a piece is a mapping with a `sections` list, got {_kind(data)}")
    for key in data:
        if key not in PIECE_KEYS:
            refuse(where, (key,), f"unknown key {key!r}: a piece takes {', '.join(PIECE_KEYS)}")
    sampling = {k: data[k] for k in SAMPLING if k in data}
    try:
        options = GenerationOptions(**sampling)
        check_fades(data.get("fade_in", 0.0), data.get("fade_out", 0.0))
    except InvalidOptionError as err:
        refuse(where, _place_of(str(err), data, (), ()), str(err))
    for key in ("model", "title"):
        value = data.get(key)
        if value is not None and (not isinstance(value, str) or not value.strip()):
            refuse(where, (key,), f"{key} must be a non-empty string, got {value!r}")
    items = data.get("sections")
    if items is None:
        refuse(where, (), "a piece needs a `sections` list (each with text and seconds)")
    if isinstance(items, (str, bytes)) or not isinstance(items, Sequence):
        refuse(where, ("sections",), f"sections must be a list, got {_kind(items)}")
    common = {k: data[k] for k in SECTION_DEFAULTS if k in data} | dict(defaults or {})
    sections = tuple(
        section_from_mapping(item, number, common, where) for number, item in enumerate(items, 1)
    )
    piece = Piece(
        sections, options, data.get("fade_in", 0.0), data.get("fade_out", 0.0),
        data.get("model"), data.get("title"),
    )  # fmt: skip
    try:
        piece.check()
    except SectionError as err:
        refuse(where, ("sections", err.number - 1), str(err))
    except InvalidOptionError as err:
        refuse(where, _place_of(str(err), data, (), ("sections",)), str(err))
    return dataclasses.replace(piece, options=GenerationOptions.of(options, duration=piece.seconds))


def section_from_mapping(
    item: object, number: int, defaults: Mapping[str, Any], where: Where = nowhere
) -> Section:
    """Section `number` (1-based) from its mapping; `defaults` fill what it does not give
    (a transition only from the second section on)."""
    place: Place = ("sections", number - 1)
    if not isinstance(item, Mapping):
        wanted = f"expected a mapping with text and seconds, got {_kind(item)}"
        refuse(where, place, f"section {number}: {wanted}")
    for key in item:
        if key not in FIELDS:
            known = f"a section takes {', '.join(FIELDS)}"
            refuse(where, (*place, key), f"section {number}: unknown key {key!r}: {known}")
    for key in ("text", "seconds"):
        if key not in item:
            refuse(where, place, f"section {number}: needs {key}")
    given = dict(defaults) | dict(item)
    if number == 1 and "transition" not in item:
        given.pop("transition", None)
    try:
        return Section(**given)
    except InvalidOptionError as err:
        refuse(where, _place_of(str(err), item, place, place), f"section {number}: {err}")


def inline_section(spec: str, number: int, defaults: Mapping[str, Any] | None = None) -> Section:
    """Section `number` from `SECONDS: TEXT` (a command line's `--section`)."""
    seconds, colon, text = spec.partition(":")
    name = f"--section {number} ({spec!r})"
    if not colon:
        raise InvalidOptionError(f"{name}: give SECONDS: TEXT, e.g. '20: soft piano intro'")
    try:
        length = float(seconds)
    except ValueError:
        raise InvalidOptionError(
            f"{name}: {seconds.strip()!r} is not a number of seconds (give SECONDS: TEXT)"
        ) from None
    given = dict(defaults or {})
    if number == 1:
        given.pop("transition", None)
    try:
        return Section(text.strip(), length, **given)
    except InvalidOptionError as err:
        raise InvalidOptionError(f"{name}: {err}") from None


def refuse(where: Where, place: Place, message: str) -> NoReturn:
    """InvalidOptionError with the message after the place's name (where known)."""
    named = where(place)
    raise InvalidOptionError(f"{named}: {message}" if named else message)


def _place_of(message: str, item: Mapping[Any, Any], place: Place, otherwise: Place) -> Place:
    """The place of the key a validation message is about (messages start with the field's
    name) in `item`, whose place is `place`; `otherwise` where it names none of its keys."""
    key = message.split(" ", 1)[0]
    return (*place, key) if key in item else otherwise


def _kind(value: object) -> str:
    return repr(value) if isinstance(value, (str, int, float)) else type(value).__name__

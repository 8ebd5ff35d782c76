"""Every generation setting's bounds are defined once (`options.BOUNDS`) and the three places
that check a setting agree on them: GenerationOptions (the Python API, batch rows), the CLI
(its parser, then the options it builds) and the HTTP schema (pydantic, hence /openapi.json).
Each field is walked at and just beyond each end of its range."""

from __future__ import annotations

import dataclasses
import math
import typing

import pytest

from tunesmith.cli.arguments import generation_options
from tunesmith.cli.main import build_parser
from tunesmith.errors import InvalidOptionError
from tunesmith.options import BOUNDS, DEFAULTS, Bounds, GenerationOptions

pydantic = pytest.importorskip("pydantic")
from tunesmith.server.schemas import GenerationRequest  # noqa: E402

FIELDS = [f.name for f in dataclasses.fields(GenerationOptions)]
FLAGS = {"cfg_scale": "--cfg"}  # the CLI's flag, where it is not the field's name


def flag(field: str) -> str:
    return FLAGS.get(field, "--" + field.replace("_", "-"))


def is_integer(field: str) -> bool:
    return "int" in str(typing.get_type_hints(GenerationOptions)[field])


def probes(field: str, bounds: Bounds) -> list[tuple[float | int, bool]]:
    """(value, allowed) at each end of the range and one step past it (the next float, or
    the next integer), and one step inside an open end."""
    out: list[tuple[float | int, bool]] = []
    for end, is_open, outward in (
        (bounds.low, bounds.low_open, -math.inf),
        (bounds.high, bounds.high_open, math.inf),
    ):
        if is_integer(field):
            step = -1 if outward < 0 else 1
            out += [(int(end), not is_open), (int(end) + step, False)]
            if is_open:
                out.append((int(end) - step, True))
        else:
            out += [(float(end), not is_open), (math.nextafter(end, outward), False)]
            if is_open:
                out.append((math.nextafter(end, -outward), True))
    return out


def through_options(field: str, value: float | int) -> bool:
    try:
        GenerationOptions(**{field: value})
    except InvalidOptionError:
        return False
    return True


def through_cli(field: str, value: float | int) -> bool:
    args = build_parser().parse_args(["generate", "x", "-o", "x.wav", f"{flag(field)}={value!r}"])
    try:
        generation_options(args)
    except InvalidOptionError:
        return False
    return True


def through_schema(field: str, value: float | int) -> bool:
    try:
        GenerationRequest(**{field: value})
    except pydantic.ValidationError:
        return False
    return True


def test_every_field_has_its_bounds() -> None:
    assert sorted(BOUNDS) == sorted(FIELDS)
    for field in FIELDS:
        default = getattr(DEFAULTS, field)
        assert default is None or BOUNDS[field].holds(default), field


@pytest.mark.parametrize("field", FIELDS)
def test_the_cli_the_options_and_the_api_agree_at_every_bound(field: str) -> None:
    for value, allowed in probes(field, BOUNDS[field]):
        got = {
            "options": through_options(field, value),
            "cli": through_cli(field, value),
            "api": through_schema(field, value),
        }
        assert got == dict.fromkeys(got, allowed), f"{field}={value!r}: {got}"
        assert BOUNDS[field].holds(value) == allowed


def test_a_refusal_names_the_field_and_its_range() -> None:
    with pytest.raises(InvalidOptionError, match=r"cfg_scale must be .*\[0, 100\].*-2"):
        GenerationOptions(cfg_scale=-2.0)
    with pytest.raises(InvalidOptionError, match=r"duration must be .*\(0, 3600\]"):
        GenerationOptions(duration=4000.0)
    for bad in (math.nan, math.inf, "3", True):
        with pytest.raises(InvalidOptionError, match="temperature"):
            GenerationOptions(temperature=bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidOptionError, match="top_k must be an integer"):
        GenerationOptions(top_k=2.0)  # type: ignore[arg-type]


def test_the_schema_documents_the_same_bounds() -> None:
    properties = GenerationRequest.model_json_schema()["properties"]
    names = {"ge": "minimum", "gt": "exclusiveMinimum", "le": "maximum", "lt": "exclusiveMaximum"}
    for field, bounds in BOUNDS.items():
        documented = properties[field]
        if "anyOf" in documented:  # seed: an integer or null
            documented = next(p for p in documented["anyOf"] if p.get("type") != "null")
        expected = {names[k]: v for k, v in bounds.as_field().items()}
        assert {k: documented[k] for k in expected} == expected, field

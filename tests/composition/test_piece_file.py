"""Piece files (YAML, JSON, TOML) and inline sections: the same piece from each, and every
bad input refused in one line naming the section or the file's line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tunesmith import Section
from tunesmith.composition.piece import inline_section, piece_from_mapping
from tunesmith.composition.piece_file import read_piece
from tunesmith.errors import InvalidOptionError

YAML = """\
title: Night drive
seed: 7
cfg_scale: 3.5
fade_in: 1
fade_out: 4
transition: 2
sections:
  - text: soft piano intro
    seconds: 20
  - text: drums enter, full band
    seconds: 40
    cfg_scale: 4
    transition: 4
  - text: outro, piano alone
    seconds: 30
    temperature: 0.9
"""

TOML = """\
title = "Night drive"
seed = 7
cfg_scale = 3.5
fade_in = 1
fade_out = 4
transition = 2

[[sections]]
text = "soft piano intro"
seconds = 20

[[sections]]
text = "drums enter, full band"
seconds = 40
cfg_scale = 4
transition = 4

[[sections]]
text = "outro, piano alone"
seconds = 30
temperature = 0.9
"""

DATA = {
    "title": "Night drive", "seed": 7, "cfg_scale": 3.5, "fade_in": 1, "fade_out": 4,
    "transition": 2,
    "sections": [
        {"text": "soft piano intro", "seconds": 20},
        {"text": "drums enter, full band", "seconds": 40, "cfg_scale": 4, "transition": 4},
        {"text": "outro, piano alone", "seconds": 30, "temperature": 0.9},
    ],
}  # fmt: skip


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_the_same_piece_from_yaml_json_and_toml(tmp_path: Path) -> None:
    pieces = [
        read_piece(write(tmp_path, "p.yaml", YAML)),
        read_piece(write(tmp_path, "p.json", json.dumps(DATA, indent=2))),
        read_piece(write(tmp_path, "p.toml", TOML)),
    ]
    assert pieces[0] == pieces[1] == pieces[2]
    piece = pieces[0]
    assert piece.sections == (
        Section("soft piano intro", 20),
        Section("drums enter, full band", 40, cfg_scale=4, transition=4),
        Section("outro, piano alone", 30, temperature=0.9, transition=2),  # the piece's default
    )
    assert (piece.options.seed, piece.options.cfg_scale, piece.options.duration) == (7, 3.5, 90)
    assert (piece.fade_in, piece.fade_out, piece.title, piece.model) == (1, 4, "Night drive", None)
    # A command line's defaults win over the file's.
    assert read_piece(tmp_path / "p.yaml", {"transition": 0}).sections[2].transition == 0


def yaml_with(change: str, new: str) -> str:
    assert change in YAML
    return YAML.replace(change, new)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (yaml_with("    seconds: 40\n", "    seconds: forty\n"),
         "p.yaml, line 11: section 2: seconds must be a positive number, got 'forty'"),
        (yaml_with("    seconds: 40\n", "    seconds: 0\n"),
         "p.yaml, line 11: section 2: seconds must be a positive number, got 0"),
        (yaml_with("    seconds: 40\n", "    seconds: -5\n"), "line 11: section 2: seconds must"),
        (yaml_with("  - text: outro, piano alone\n", "  - text: ''\n"),
         "p.yaml, line 14: section 3: text must be a non-empty string"),
        (yaml_with("    temperature: 0.9\n", "    tempo: 90\n"),
         "p.yaml, line 16: section 3: unknown key 'tempo'"),
        (yaml_with("seed: 7\n", "speed: 7\n"), "p.yaml, line 2: unknown key 'speed'"),
        (yaml_with("    transition: 4\n", "    transition: 41\n"),
         "p.yaml, line 13: section 2: transition 41s is longer than the section's 40s"),
        (yaml_with("    cfg_scale: 4\n", "    context: 30\n"),
         "p.yaml, line 12: section 2: context 30s is not shorter than the model's 30s window"),
        (yaml_with("  - text: soft piano intro\n    seconds: 20\n",
                   "  - text: soft piano intro\n    seconds: 20\n    transition: 1\n"),
         "p.yaml, line 8: section 1: a transition blends from the section before"),
        (yaml_with("  - text: soft piano intro\n", "  - seconds_: 3\n"),
         "p.yaml, line 8: section 1: unknown key 'seconds_'"),
        (yaml_with("    seconds: 30\n", "    seconds: 3590\n"),
         "p.yaml, line 7: the sections add up to 3650s: a piece may be at most 3600s"),
        (yaml_with("fade_out: 4\n", "fade_out: -4\n"),
         "p.yaml, line 5: fade_out must be a number of seconds >= 0"),
        (yaml_with("fade_out: 4\n", "fade_out: 95\n"),
         "p.yaml, line 4: fade_in 1s and fade_out 95s together are longer than the 90s clip"),
        (yaml_with("seed: 7\n", "seed: seven\n"), "p.yaml, line 2: seed must be an integer"),
        (yaml_with("  - text: soft piano intro\n    seconds: 20\n", "  - soft piano intro\n"),
         "p.yaml, line 8: section 1: expected a mapping with text and seconds, got 'soft piano"),
        (yaml_with("    seconds: 20\n", ""), "p.yaml, line 8: section 1: needs seconds"),
        ("sections: []\n", "p.yaml, line 1: a piece needs at least one section"),
        ("seed: 3\n", "p.yaml, line 1: a piece needs a `sections` list"),
        ("- 20: intro\n", "p.yaml, line 1: a piece is a mapping with a `sections` list, got list"),
        ("sections: [\n  {text: a, seconds: 1}\n  oops\n", "p.yaml, line 3: not valid YAML"),
        ("sections:\n" + "  - {text: a, seconds: 1}\n" * 101,
         "p.yaml, line 1: 101 sections: a piece may have at most 100"),
    ],
)  # fmt: skip
def test_bad_yaml_names_the_line_and_section(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(InvalidOptionError) as err:
        read_piece(write(tmp_path, "p.yaml", text))
    assert message in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("p.json", json.dumps(DATA, indent=2).replace('"temperature"', '"tempo"'),
         "p.json, line 22: section 3: unknown key 'tempo'"),
        ("p.json", '{"sections": [\n  {"text": "a", "seconds": 1},\n]}',
         "p.json, line 3: not valid JSON"),
        ("p.toml", TOML.replace("seconds = 40", 'seconds = "forty"'),
         "p.toml, line 14: section 2: seconds must be a positive number, got 'forty'"),
        ("p.toml", TOML.replace("temperature = 0.9", "tempo = 0.9"),
         "p.toml, line 21: section 3: unknown key 'tempo'"),
        ("p.toml", TOML.replace('seed = 7', 'seed = '), "p.toml: not valid TOML"),
        ("p.txt", "20: intro", "p.txt: a piece file is YAML (.yaml, .yml), JSON (.json) or TOML"),
        ("p.yml", "\x00\xff", "p.yml"),
    ],
)  # fmt: skip
def test_bad_json_toml_and_other_files(tmp_path: Path, name: str, text: str, message: str) -> None:
    with pytest.raises(InvalidOptionError) as err:
        read_piece(write(tmp_path, name, text))
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_a_missing_file_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(InvalidOptionError, match="does not exist"):
        read_piece(tmp_path / "nope.yaml")


def test_a_mapping_without_a_file_names_the_section() -> None:
    data = {"sections": [{"text": "a", "seconds": 2}, {"text": "b", "seconds": "2s"}]}
    with pytest.raises(InvalidOptionError, match=r"^section 2: seconds must be"):
        piece_from_mapping(data)


def test_inline_sections() -> None:
    assert inline_section("20: soft piano intro", 1) == Section("soft piano intro", 20.0)
    assert inline_section(" 7.5 :drums: enter", 2, {"transition": 2}) == Section(
        "drums: enter", 7.5, transition=2
    )
    assert inline_section("3: a", 1, {"transition": 2}).transition == 0  # nothing before it
    for spec, message in [
        ("soft piano", "--section 1 ('soft piano'): give SECONDS: TEXT"),
        ("twenty: intro", "--section 1 ('twenty: intro'): 'twenty' is not a number of seconds"),
        ("0: intro", "--section 1 ('0: intro'): seconds must be a positive number"),
        ("20:  ", "--section 1 ('20:  '): text must be a non-empty string"),
        ("nan: x", "seconds must be a positive number"),
    ]:
        with pytest.raises(InvalidOptionError) as err:
            inline_section(spec, 1)
        assert message in str(err.value)

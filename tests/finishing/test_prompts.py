"""Tempo and key hints in the text: added unless the text names them already."""

from __future__ import annotations

import pytest

from tunesmith.finishing.options import FinishOptions
from tunesmith.finishing.prompts import hinted_prompt, names_key, names_tempo


@pytest.mark.parametrize(
    "text", ["techno at 128 bpm", "120-BPM house", "bpm: 96 funk", "90 beats per minute", "BPM 72"]
)
def test_these_name_a_tempo(text: str) -> None:
    assert names_tempo(text)


@pytest.mark.parametrize("text", ["fast techno", "allegro strings", "128 kbps lofi", "bpm"])
def test_these_do_not(text: str) -> None:
    assert not names_tempo(text)


def test_keys_in_text() -> None:
    assert names_key("sad piano in A minor") and names_key("Bb maj groove")
    assert names_key("in the key of E") and names_key("F# min pad")
    assert not names_key("a minimal house track") and not names_key("piano ballad")


def test_hints_are_added_once() -> None:
    options = FinishOptions(bpm=110, key="am")
    assert hinted_prompt("lofi beat", options) == "lofi beat, 110 bpm, in A minor"
    assert (
        hinted_prompt("lofi beat at 90 bpm in C major", options) == "lofi beat at 90 bpm in C major"
    )
    assert hinted_prompt("lofi beat.", FinishOptions(bpm=97.5)) == "lofi beat, 97.5 bpm"
    assert hinted_prompt(None, options) is None and hinted_prompt("", options) == ""
    assert hinted_prompt("lofi beat", FinishOptions()) == "lofi beat"

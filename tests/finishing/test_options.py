"""Finishing options: every bad value refused in one line when the options are made."""

from __future__ import annotations

import pytest

from tunesmith.errors import InvalidOptionError
from tunesmith.finishing.options import FinishOptions, Key, parse_key


@pytest.mark.parametrize(
    ("name", "key"),
    [("A minor", Key(9, "minor")), ("Am", Key(9, "minor")), ("F# major", Key(6, "major")),
     ("Bb", Key(10, "major")), ("bbm", Key(10, "minor")), ("Eb maj", Key(3, "major")),
     ("C#min", Key(1, "minor")), ("CM", Key(0, "major")), ("g minor", Key(7, "minor"))],
)  # fmt: skip
def test_key_names(name: str, key: Key) -> None:
    assert parse_key(name) == key


def test_keys_name_themselves_and_their_relatives() -> None:
    assert str(Key(9, "minor")) == "A minor" and str(Key(10, "major")) == "Bb major"
    assert Key(9, "minor").relative == Key(0, "major") and Key(0, "major").relative.tonic == 9
    assert FinishOptions(key="f#m").key == "F# minor"  # kept as its canonical name


@pytest.mark.parametrize(
    ("changes", "words"),
    [({"bpm": 29.0}, "bpm must be a tempo from 30 to 300"), ({"bpm": 301}, "30 to 300"),
     ({"bpm": float("nan")}, "bpm must"), ({"key": "H minor"}, "unknown key 'H minor'"),
     ({"key": "A dorian"}, "unknown key"), ({"loop": 0}, "loop must be a whole number"),
     ({"loop": 2.5}, "loop must"), ({"conform_key": True}, "needs a key"),
     ({"fade_in": -1.0}, "fade_in must"), ({"loop": 4, "fade_out": 1.0}, "takes no fade"),
     ({"normalize": "loud"}, "unknown normalize")],
)  # fmt: skip
def test_bad_options_are_refused_in_one_line(changes: dict, words: str) -> None:
    with pytest.raises(InvalidOptionError, match=words) as err:
        FinishOptions(**changes)
    assert "\n" not in str(err.value)


def test_a_loop_or_fades_that_cannot_fit_are_refused() -> None:
    FinishOptions(bpm=120, loop=4).check_fits(8.5)  # 8 s and a beat
    with pytest.raises(InvalidOptionError, match=r"needs 8\.50s of audio"):
        FinishOptions(bpm=120, loop=4).check_fits(8.4)
    with pytest.raises(InvalidOptionError, match="longer than"):
        FinishOptions(fade_in=3, fade_out=3).check_fits(5.0)


def test_records_hold_only_what_changes_the_audio() -> None:
    assert FinishOptions().record() is None and FinishOptions(normalize="peak").record() is None
    record = FinishOptions(bpm=110, loop=4).record()
    assert record is not None and record["bpm"] == 110.0 and record["loop"] == 4
    assert FinishOptions.from_record({"seed": 1, **record}) == FinishOptions(bpm=110, loop=4)

"""The finishing pipeline on clips with known answers: what it measures, does and reports."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tunesmith.errors import InvalidOptionError
from tunesmith.finishing.options import FinishOptions
from tunesmith.finishing.pipeline import finish
from tunesmith.testing.signals import RATE, drums, song


def test_tempo_key_and_loop_are_measured_done_and_reported() -> None:
    wav = torch.from_numpy(song(100, 7, "major", 6))[None]  # G major at 100 BPM
    done = finish(wav, RATE, FinishOptions(bpm=110, key="A major", conform_key=True, loop=2))
    report = done.report
    assert report.tempo_before == pytest.approx(100, abs=0.5)
    assert report.tempo_after == pytest.approx(110, abs=0.5)
    assert report.stretch == pytest.approx(1.1, abs=0.01)
    assert (report.key_detected, report.key_shift, report.key_after) == ("G major", 2, "A major")
    assert done.audio.shape == (1, round(2 * 4 * 60 / 110 * RATE)) and done.loop is not None
    assert report.loop is not None and report.loop["bpm"] == 110 and report.loop["on_beat"]
    assert done.root == 69 and len(report.notes) == 3
    record = report.record()
    assert record is not None and record["tempo_before"] == report.tempo_before


def test_a_relative_key_needs_no_shift() -> None:
    wav = torch.from_numpy(song(120, 9, "minor", 2))[None]  # A minor: C major's notes
    report = finish(wav, RATE, FinishOptions(key="C major", conform_key=True)).report
    assert report.key_detected == "A minor" and report.key_shift == 0


def test_noise_says_what_it_did_instead() -> None:
    noise = 0.1 * torch.from_numpy(np.random.default_rng(2).standard_normal(7 * RATE))[None]
    done = finish(noise.float(), RATE, FinishOptions(bpm=110, loop=2))
    assert done.report.tempo_before is None and done.report.stretch is None
    assert (
        "no steady beat" in done.report.notes[0] and "no beat to start on" in done.report.notes[1]
    )
    assert done.audio.shape[-1] == round(2 * 4 * 60 / 110 * RATE)
    unlooped = finish(noise.float(), RATE, FinishOptions(loop=2))
    assert unlooped.loop is None and unlooped.audio.shape == noise.shape
    assert "none made" in unlooped.report.notes[-1] and unlooped.report.loop is None


def test_a_tempo_too_far_is_left_as_it_is() -> None:
    wav = torch.from_numpy(drums(100, 6.0))[None]
    done = finish(wav, RATE, FinishOptions(bpm=140, normalize="none"))
    assert done.report.stretch is None and "left as it is" in done.report.notes[0]
    assert torch.equal(done.audio, wav)


def test_fades_then_level_and_nothing_else() -> None:
    wav = torch.ones(1, 2 * RATE) * 0.1
    done = finish(wav, RATE, FinishOptions(fade_in=0.5, fade_out=0.5, normalize="peak"))
    assert float(done.audio[0, 0]) < 0.01 and float(done.audio.abs().max()) == pytest.approx(
        10 ** (-1 / 20), rel=1e-3
    )
    assert done.report.record() == {"fade_in": 0.5, "fade_out": 0.5}
    plain = finish(wav, RATE)  # the defaults only level
    assert plain.report.record() is None and plain.loop is None


def test_a_loop_longer_than_the_audio_is_refused() -> None:
    with pytest.raises(InvalidOptionError, match="needs"):
        finish(torch.zeros(1, 3 * RATE), RATE, FinishOptions(bpm=120, loop=2))


def test_the_python_api_offers_finishing(tmp_path) -> None:
    import soundfile as sf

    import tunesmith

    wav = torch.from_numpy(drums(120, 5.0))[None]
    done = tunesmith.finish(wav, RATE, tunesmith.FinishOptions(bpm=120, loop=2))
    tunesmith.write_finished(tmp_path / "loop.wav", done, RATE)
    assert sf.info(str(tmp_path / "loop.wav")).frames == 4 * RATE
    assert tunesmith.hinted_prompt("drums", tunesmith.FinishOptions(bpm=120)) == "drums, 120 bpm"

"""Finding a data set: sidecar captions, audiocraft JSON, manifests, and every bad input as
one clear error before any long work."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tunesmith.errors import TrainingDataError
from tunesmith.training.data import find_examples, fold_music_info, split


def _wav(path: Path, seconds: float = 0.5, rate: int = 16000, channels: int = 2) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(
        path, 0.3 * np.random.default_rng(0).standard_normal((int(seconds * rate), channels)), rate
    )
    return path


def test_sidecar_text_and_audiocraft_json(tmp_path: Path) -> None:
    _wav(tmp_path / "a.wav").with_suffix(".txt").write_text("  warm piano \n")
    _wav(tmp_path / "sub" / "b.flac")
    (tmp_path / "sub" / "b.json").write_text(json.dumps({
        "description": "a rock song", "genre": "rock", "moods": ["angry", "loud"],
        "keywords": "", "bpm": 120, "key": "E minor",
    }))  # fmt: skip
    examples = find_examples(tmp_path)
    assert [(e.key, e.caption) for e in examples] == [
        ("a.wav", "warm piano"),
        ("sub/b.flac", "a rock song. genre: rock. moods: angry, loud. bpm: 120. key: E minor"),
    ]


def test_manifests(tmp_path: Path) -> None:
    _wav(tmp_path / "clips" / "one.wav")
    _wav(tmp_path / "clips" / "two.ogg")
    csv = tmp_path / "set.csv"
    csv.write_text("path,caption,extra\nclips/one.wav,first,x\nclips/two.ogg,second,y\n")
    assert [e.caption for e in find_examples(csv)] == ["first", "second"]
    jsonl = tmp_path / "set.jsonl"
    jsonl.write_text('{"path": "clips/one.wav", "caption": "uno"}\n\n')
    assert [e.caption for e in find_examples(jsonl)] == ["uno"]
    bad = tmp_path / "bad.csv"
    bad.write_text("file,caption\nclips/one.wav,x\n")
    with pytest.raises(TrainingDataError, match="needs a 'path' column"):
        find_examples(bad)


def test_bad_data_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(TrainingDataError, match="does not exist"):
        find_examples(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(TrainingDataError, match="holds no audio files"):
        find_examples(tmp_path / "empty")
    for name in ("x.wav", "y.wav", "z.wav"):
        _wav(tmp_path / "nocaps" / name)
    (tmp_path / "nocaps" / "y.txt").write_text("has one")
    with pytest.raises(TrainingDataError, match=r"2 of 3 audio files have no caption .*x\.wav"):
        find_examples(tmp_path / "nocaps")
    examples = find_examples(tmp_path / "nocaps", default_caption="music")
    assert [e.caption for e in examples] == ["music", "has one", "music"]


def test_music_info_folding_skips_empty_fields() -> None:
    assert fold_music_info({"description": "calm", "moods": []}) == "calm"


def test_split_is_stable_and_keeps_both_sides(tmp_path: Path) -> None:
    for i in range(10):
        _wav(tmp_path / f"{i}.wav").with_suffix(".txt").write_text(str(i))
    examples = find_examples(tmp_path)
    train, val = split(examples, 0.2)
    assert val and train and len(train) + len(val) == 10
    assert split(examples, 0.2) == (train, val)
    assert split(examples[:2], 0.01)[1]  # a share above zero holds out at least one file
    assert split(examples, 0.0) == (examples, [])

"""Every output format writes, reads back, and keeps its tags; spectrogram pictures."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from tunesmith.audio.files import MAX_TAG_BYTES, read_audio, read_tags, write_audio
from tunesmith.cli import generate as cli_generate
from tunesmith.errors import AudioFileError
from tunesmith.jobs.batch import clip_tags
from tunesmith.options import GenerationOptions

RATE = 32000
PROMPT = "jazz trio, brushed drums — café"


def clip(seconds: float = 0.5, channels: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return 0.2 * torch.randn(channels, int(seconds * RATE), generator=g).clamp(-1, 1)


def tags() -> dict[str, str]:
    settings = {"duration": 0.5, "seed": 123, "top_k": 250, "top_p": 0.0, "cfg": 3.0}
    return clip_tags(PROMPT, "facebook/musicgen-small", settings)


CASES = [
    ("x.wav", None, "WAV", "PCM_16"),
    ("x.wav", "PCM_24", "WAV", "PCM_24"),
    ("x.wav", "FLOAT", "WAV", "FLOAT"),
    ("x.flac", None, "FLAC", "PCM_16"),
    ("x.ogg", None, "OGG", "VORBIS"),
    ("x.mp3", None, "MP3", "MPEG_LAYER_III"),
]


@pytest.mark.parametrize(("name", "subtype", "fmt", "stored"), CASES)
def test_format_round_trip_with_tags(
    tmp_path: Path, name: str, subtype: str | None, fmt: str, stored: str
) -> None:
    if fmt == "MP3" and "MP3" not in sf.available_formats():
        pytest.skip("this libsndfile has no MP3")
    path = tmp_path / name
    wav = clip(channels=2 if fmt == "FLAC" else 1)
    write_audio(path, wav, RATE, subtype, tags=tags())
    info = sf.info(str(path))
    assert (info.format, info.subtype, info.samplerate) == (fmt, stored, RATE)
    back = read_audio(path)
    assert back.shape[0] == wav.shape[0]
    if fmt in ("WAV", "FLAC"):
        assert back.shape == wav.shape
        tolerance = {"FLOAT": 1e-7, "PCM_24": 1e-6, "PCM_16": 1e-4}[stored]
        assert (back - wav).abs().max() < tolerance
    else:  # lossy: length within the codec's padding, same level
        assert abs(back.shape[-1] - wav.shape[-1]) < 0.1 * RATE
    read = read_tags(path)
    assert read["title"] == PROMPT
    assert read["artist"] == "facebook/musicgen-small"
    info_json = json.loads(read["comment"])
    assert info_json["seed"] == 123 and info_json["model"] == "facebook/musicgen-small"
    assert info_json["duration"] == 0.5
    if fmt != "MP3":  # LAME writes its own name there
        assert read["software"].startswith("tunesmith")


def test_long_tags_are_cut_and_keep_the_others(tmp_path: Path) -> None:
    path = tmp_path / "long.wav"
    write_audio(path, clip(), RATE, tags={"title": "é" * 3000, "comment": "kept"})
    read = read_tags(path)
    assert read["comment"] == "kept"
    assert len(read["title"].encode()) <= MAX_TAG_BYTES and set(read["title"]) == {"é"}
    with pytest.raises(AudioFileError, match="unknown tag"):
        write_audio(tmp_path / "bad.wav", clip(), RATE, tags={"mood": "x"})
    assert not list(tmp_path.glob(".tunesmith-*"))


def test_missing_mp3_support_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    formats = {k: v for k, v in sf.available_formats().items() if k != "MP3"}
    monkeypatch.setattr(sf, "available_formats", lambda: formats)
    with pytest.raises(AudioFileError, match="no MP3 support"):
        write_audio(tmp_path / "x.mp3", clip(), RATE)


def test_plot_writes_a_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from tunesmith.audio.spectrogram import plot_spectrogram, png_path

    target = png_path(tmp_path / "song.flac")
    assert target == tmp_path / "song.flac.png"
    plot_spectrogram(clip(channels=2), RATE, target, title=PROMPT)
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    tiny = tmp_path / "tiny.png"
    plot_spectrogram(clip(seconds=0.01), RATE, tiny)  # shorter than one FFT window
    assert tiny.stat().st_size > 0


def test_plot_without_matplotlib_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    from tunesmith.audio.spectrogram import require_matplotlib
    from tunesmith.errors import InvalidOptionError

    real_import = builtins.__import__

    def no_matplotlib(name: str, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    with pytest.raises(InvalidOptionError, match=r"tunesmith\[plot\]"):
        require_matplotlib()


def test_generate_output_options(tiny_model, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    args = argparse.Namespace(
        prompts=["lofi", ""], duration=0.3, seed=3, top_k=250, top_p=0.0, temperature=1.0,
        cfg=3.0, stride=18.0, normalize="peak", wav_subtype="PCM_24", plot=True,
        continue_from=None,
    )  # fmt: skip
    wav = tiny_model.generate(["lofi", None], duration=0.3, seed=3)
    paths = [tmp_path / "o-1.wav", tmp_path / "o-2.flac"]
    options = GenerationOptions(duration=0.3, seed=3)
    cli_generate.write_outputs(args, options, tiny_model, paths, wav)
    for index, path in enumerate(paths):
        data, _ = sf.read(str(path))
        assert np.abs(data).max() == pytest.approx(10 ** (-1 / 20), abs=1e-3)
        assert path.with_name(path.name + ".png").is_file()
        info = json.loads(read_tags(path)["comment"])
        assert info["seed"] == 3 and info["batch"] == {"prompts": ["lofi", None], "index": index}
    assert sf.info(str(paths[0])).subtype == "PCM_24"
    assert sf.info(str(paths[1])).subtype == "PCM_16"
    assert read_tags(paths[1])["title"] == "(unconditional)"

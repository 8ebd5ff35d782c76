from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from tunesmith.audio.files import check_writable, match_channels, read_audio, resample, write_audio
from tunesmith.errors import AudioFileError


def test_write_read_round_trip(tmp_path: Path) -> None:
    wav = 0.5 * torch.sin(torch.linspace(0, 100, 32000))[None]
    write_audio(tmp_path / "a.wav", wav, 32000)
    info = sf.info(str(tmp_path / "a.wav"))
    assert (info.samplerate, info.subtype, info.frames) == (32000, "PCM_16", 32000)
    back = read_audio(tmp_path / "a.wav")
    assert (back - wav).abs().max() < 1e-4
    assert oct(os.stat(tmp_path / "a.wav").st_mode & 0o777) != "0o600"


def test_resample_stereo_44k_to_mono_32k(tmp_path: Path) -> None:
    t = np.arange(44100) / 44100
    tone = 0.4 * np.sin(2 * np.pi * 440 * t)
    sf.write(str(tmp_path / "s.wav"), np.stack([tone, tone], axis=1), 44100)
    wav = read_audio(tmp_path / "s.wav", sample_rate=32000, channels=1)
    assert wav.shape == (1, 32000)
    want = 0.4 * np.sin(2 * np.pi * 440 * np.arange(32000) / 32000)
    assert np.abs(wav[0, 1000:-1000].numpy() - want[1000:-1000]).max() < 1e-2


def test_channels_and_rate_helpers() -> None:
    assert match_channels(torch.ones(2, 5), 1).shape == (1, 5)
    assert match_channels(torch.ones(1, 5), 2).shape == (2, 5)
    assert resample(torch.ones(1, 100), 100, 100).shape == (1, 100)


def test_errors_name_the_file(tmp_path: Path) -> None:
    (tmp_path / "bad.wav").write_text("not audio")
    with pytest.raises(AudioFileError, match=r"bad\.wav"):
        read_audio(tmp_path / "bad.wav")
    with pytest.raises(AudioFileError, match="does not exist"):
        check_writable(tmp_path / "nope" / "x.wav")
    with pytest.raises(AudioFileError, match="folder"):
        check_writable(tmp_path)


def test_write_errors_are_ours_and_leave_no_temp_file(tmp_path: Path) -> None:
    wav = torch.zeros(1, 100)
    with pytest.raises(AudioFileError, match=r"nope"):
        write_audio(tmp_path / "nope" / "x.wav", wav, 32000)
    with pytest.raises(AudioFileError, match=r"unknown audio format '\.xyz'"):
        write_audio(tmp_path / "x.xyz", wav, 32000)
    with pytest.raises(AudioFileError, match="unknown audio format"):
        check_writable(tmp_path / "x.xyz")
    check_writable(tmp_path / "x.flac")
    write_audio(tmp_path / "x.flac", wav, 32000)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.flac"]

"""Levelling before writing: loudness measured independently with pyloudnorm, never clipping."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pyloudnorm
import pytest
import soundfile as sf
import torch

from tunesmith.audio.files import write_audio
from tunesmith.audio.loudness import measure_loudness, normalize_audio
from tunesmith.errors import InvalidOptionError

RATE = 32000


def lufs(wav: torch.Tensor | np.ndarray, rate: int = RATE) -> float:
    """pyloudnorm's BS.1770 meter with its standard 400 ms blocks; [C, N] tensors or [N, C]."""
    data = wav.double().numpy().T if isinstance(wav, torch.Tensor) else wav
    return float(pyloudnorm.Meter(rate).integrated_loudness(data))


def tone(seconds: float = 2.0, amplitude: float = 0.05, channels: int = 1) -> torch.Tensor:
    t = torch.arange(int(seconds * RATE)) / RATE
    wav = amplitude * torch.sin(2 * math.pi * 440 * t) + 0.3 * amplitude * torch.sin(
        2 * math.pi * 1250 * t
    )
    return wav.expand(channels, -1).clone()


def noise(seconds: float = 2.0, amplitude: float = 0.02, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return amplitude * torch.randn(1, int(seconds * RATE), generator=g)


@pytest.mark.parametrize(
    "wav", [tone(), tone(amplitude=0.9), tone(channels=2), noise(), noise(amplitude=0.3)]
)
def test_loudness_reaches_minus_14_lufs_without_clipping(wav: torch.Tensor) -> None:
    out = normalize_audio(wav, RATE, "loudness")
    assert lufs(out) == pytest.approx(-14.0, abs=0.5)
    assert out.abs().max() <= 1.0
    assert out.shape == wav.shape


def test_peaky_audio_is_scaled_down_not_clipped() -> None:
    wav = noise(amplitude=0.01)
    wav[0, 1000] = 0.9  # one spike: -14 LUFS would push it far past full scale
    out = normalize_audio(wav, RATE, "loudness")
    assert float(out.abs().max()) == pytest.approx(1.0, abs=1e-6)
    assert lufs(out) < -14.0
    assert torch.allclose(out / out[0, 1000], wav / wav[0, 1000])  # same shape, only a gain


def test_quiet_and_silent_audio_are_left_alone() -> None:
    quiet = noise(amplitude=1e-4)
    assert torch.equal(normalize_audio(quiet, RATE, "loudness"), quiet)
    silence = torch.zeros(1, RATE)
    for mode in ("loudness", "peak", "rms", "none"):
        out = normalize_audio(silence, RATE, mode)
        assert torch.equal(out, silence), mode


def test_peak_rms_none() -> None:
    wav = tone(amplitude=0.2)
    peak = normalize_audio(wav, RATE, "peak")
    assert float(peak.abs().max()) == pytest.approx(10 ** (-1 / 20), rel=1e-5)
    rms = normalize_audio(wav, RATE, "rms")
    assert float(rms.pow(2).mean().sqrt()) == pytest.approx(10 ** (-18 / 20), rel=1e-4)
    assert torch.equal(normalize_audio(wav, RATE, "none"), wav)
    spiky = noise(amplitude=0.01)
    spiky[0, 500] = 0.5  # -18 dBFS RMS would put the spike past full scale: limited instead
    assert float(normalize_audio(spiky, RATE, "rms").abs().max()) == pytest.approx(1.0)
    with pytest.raises(InvalidOptionError, match="normalize mode"):
        normalize_audio(wav, RATE, "lufs")


def test_short_clips_are_measured_as_one_block() -> None:
    short = tone(seconds=0.2)  # shorter than the 400 ms gating block
    out = normalize_audio(short, RATE, "loudness")
    assert measure_loudness(out, RATE) == pytest.approx(-14.0, abs=0.05)
    block = pyloudnorm.Meter(RATE, block_size=0.2).integrated_loudness(out.double().numpy().T)
    assert block == pytest.approx(-14.0, abs=0.05)


def test_measure_matches_pyloudnorm() -> None:
    wav = noise(amplitude=0.1)
    assert measure_loudness(wav, RATE) == pytest.approx(lufs(wav), abs=1e-6)


@pytest.mark.parametrize("subtype", ["PCM_16", "FLOAT"])
def test_written_file_measures_minus_14(tmp_path: Path, subtype: str) -> None:
    path = tmp_path / "x.wav"
    write_audio(path, noise(amplitude=0.005), RATE, subtype, normalize="loudness")
    data, rate = sf.read(str(path), always_2d=True)
    assert lufs(data, rate) == pytest.approx(-14.0, abs=0.5)
    assert np.abs(data).max() <= 1.0

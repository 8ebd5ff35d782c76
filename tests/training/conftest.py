"""Audio folders for the fine-tuning tests: short clips of distinct sounds with captions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

RATE = 32000
SOUNDS = {
    "low hum": lambda t: 0.5 * np.sin(2 * np.pi * 110 * t),
    "high beep": lambda t: 0.5 * np.sin(2 * np.pi * 1760 * t),
    "buzzy square": lambda t: 0.5 * np.sign(np.sin(2 * np.pi * 220 * t)),
    "fast pulses": lambda t: 0.5 * np.sign(np.sin(2 * np.pi * 4 * t)) * np.sin(2 * np.pi * 600 * t),
}


def write_clips(folder: Path, seconds: float = 1.0, rate: int = RATE) -> dict[str, Path]:
    """One clip per caption in SOUNDS, captioned by a NAME.txt beside it."""
    folder.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(rate * seconds)) / rate
    paths = {}
    for i, (caption, sound) in enumerate(SOUNDS.items()):
        path = folder / f"clip{i}.wav"
        sf.write(path, sound(t).astype(np.float32), rate)
        path.with_suffix(".txt").write_text(caption)
        paths[caption] = path
    return paths


@pytest.fixture
def clips(tmp_path: Path) -> Path:
    write_clips(tmp_path / "data")
    return tmp_path / "data"

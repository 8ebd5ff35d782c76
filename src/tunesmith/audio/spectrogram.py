"""Spectrogram pictures of generated clips, for people who would rather look than listen first.

matplotlib is an optional extra (`pip install 'tunesmith[plot]'`), imported only when a plot is
asked for. The figure is drawn on matplotlib's Agg canvas directly, without pyplot, so nothing
global (the backend, open figures) is touched.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ..errors import InvalidOptionError

N_FFT = 2048
HOP = 512
FLOOR_DB = -80.0  # shown range below the loudest bin


def require_matplotlib() -> None:
    """Raise InvalidOptionError with the install line unless matplotlib can be imported."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise InvalidOptionError("--plot needs matplotlib: pip install 'tunesmith[plot]'") from None


def png_path(audio_path: str | os.PathLike[str]) -> Path:
    """Where the picture of `audio_path` goes: beside it, its whole name and `.png`
    (song.flac.png), so that song.flac and song.mp3 each get their own."""
    path = Path(audio_path)
    return path.with_name(path.name + ".png")


def spectrogram_db(wav: torch.Tensor, n_fft: int = N_FFT, hop: int = HOP) -> torch.Tensor:
    """[C, N] audio -> [F, T] magnitude in dB of the mono mix, 0 dB at the loudest bin."""
    mono = wav.detach().float().cpu().mean(dim=0)
    n_fft = min(n_fft, max(16, mono.shape[-1]))
    spec = torch.stft(
        mono,
        n_fft,
        hop_length=min(hop, n_fft // 4),
        window=torch.hann_window(n_fft),
        return_complex=True,
    ).abs()
    db = 20 * torch.log10(spec.clamp_min(1e-10))
    return (db - db.max()).clamp_min(FLOOR_DB)


def plot_spectrogram(
    wav: torch.Tensor,
    sample_rate: int,
    path: str | os.PathLike[str],
    title: str | None = None,
) -> Path:
    """Save a spectrogram PNG of [C, N] audio (time in seconds, frequency in kHz) to `path`."""
    require_matplotlib()
    from matplotlib.figure import Figure

    db = spectrogram_db(wav).numpy()
    seconds = wav.shape[-1] / sample_rate
    fig = Figure(figsize=(8, 3), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(
        db,
        origin="lower",
        aspect="auto",
        cmap="magma",
        extent=(0.0, seconds, 0.0, sample_rate / 2000),
        vmin=FLOOR_DB,
        vmax=0.0,
    )
    ax.set_xlabel("time (s)")
    ax.set_ylabel("frequency (kHz)")
    if title:
        ax.set_title(title if len(title) <= 80 else title[:77] + "...", fontsize=9)
    fig.colorbar(image, ax=ax, label="dB")
    target = Path(path)
    fig.savefig(target, format="png")
    return target

"""The spectrogram the web page shows beside a finished job's player: drawn once, on first
request, and kept beside the audio (`audio/<id>.png`, deleted with the job).

Drawn for the page rather than for a report: a dark panel in the page's purples (it reads on
the light and the dark theme alike), frequency on a log axis from 40 Hz (where music lives),
labels in the page's muted grey at the size the page shows (about 500 px wide), and a
transparent margin so the card's own colour shows around it.
"""

from __future__ import annotations

import io
import itertools
import os
import tempfile
import threading
from pathlib import Path

import numpy as np
import torch

N_FFT = 2048
COLUMNS = 1000  # time columns drawn, whatever the length (a long piece is sampled)
ROWS = 200  # log-spaced frequency rows
LOWEST_HZ = 40.0
FLOOR_DB = -70.0
SIZE_INCHES = (5.0, 1.6)  # at 200 dpi: 1000 x 320 px, shown at about half that (sharp on HiDPI)
DPI = 200
PANEL = ["#15161a", "#2a2740", "#5b4cdb", "#8b7ff5", "#d9d4ff", "#ffffff"]  # style.css
LABELS = "#8a8f99"  # between the light (#6b7079) and dark (#9aa0aa) themes' muted grey
_drawing = threading.Lock()  # one picture at a time: rare, and matplotlib likes it calm


def spectrogram_png(source: Path, target: Path) -> bytes:
    """The kept picture at `target`, drawn from the audio file `source` if it is not there
    yet (ImportError without matplotlib). Kept only if the disk takes it; served anyway."""
    if target.is_file():
        return target.read_bytes()
    with _drawing:
        if target.is_file():
            return target.read_bytes()
        import soundfile

        from ..audio.files import read_audio

        png = render(read_audio(source), int(soundfile.info(str(source)).samplerate))
        _keep(png, target)
    return png


def render(wav: torch.Tensor, sample_rate: int) -> bytes:
    """A PNG of [C, N] audio's spectrogram in the page's style."""
    from matplotlib.colors import LinearSegmentedColormap
    from matplotlib.figure import Figure
    from matplotlib.ticker import FixedLocator, FuncFormatter, MaxNLocator

    image, top = log_spectrogram(wav, sample_rate)
    seconds = wav.shape[-1] / sample_rate
    fig = Figure(figsize=SIZE_INCHES, dpi=DPI)
    fig.patch.set_alpha(0.0)
    ax = fig.add_axes((0.1, 0.17, 0.86, 0.8))
    cmap = LinearSegmentedColormap.from_list("tunesmith", PANEL)
    lo, hi = np.log10(LOWEST_HZ), np.log10(top)
    ax.imshow(
        image, origin="lower", aspect="auto", cmap=cmap, vmin=FLOOR_DB, vmax=0.0,
        extent=(0.0, seconds, lo, hi), interpolation="bilinear",
    )  # fmt: skip
    marks = [f for f in (100, 1000, 10000) if LOWEST_HZ < f < top]
    ax.yaxis.set_major_locator(FixedLocator([np.log10(f) for f in marks]))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: _hertz(10**v)))
    ax.xaxis.set_major_locator(MaxNLocator(nbins=6, steps=[1, 2, 2.5, 5, 10]))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g} s"))
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.tick_params(colors=LABELS, labelsize=9, length=0, pad=4)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", transparent=True)
    return buffer.getvalue()


def log_spectrogram(wav: torch.Tensor, sample_rate: int) -> tuple[np.ndarray, float]:
    """[ROWS, <= COLUMNS] dB (0 at the loudest) of the mono mix on log-spaced frequencies from
    LOWEST_HZ to the Nyquist frequency, and that top frequency."""
    mono = wav.detach().float().cpu().mean(dim=0)
    n_fft = min(N_FFT, max(16, mono.shape[-1]))
    hop = max(n_fft // 4, mono.shape[-1] // COLUMNS)  # a long piece: columns sampled
    spec = torch.stft(
        mono, n_fft, hop_length=hop, window=torch.hann_window(n_fft), return_complex=True
    ).abs()  # [F, T]
    level = 20 * torch.log10(spec.clamp_min(1e-10))
    db = (level - level.max()).clamp_min(FLOOR_DB).numpy()
    top = sample_rate / 2
    bins = np.linspace(0.0, top, db.shape[0])
    rows = np.geomspace(LOWEST_HZ, top, ROWS)
    # Each row takes the loudest bin of its band (high rows span many bins, low rows fewer).
    edges = np.searchsorted(bins, np.sqrt(rows[:-1] * rows[1:]))
    edges = np.concatenate([[np.searchsorted(bins, LOWEST_HZ)], edges, [len(bins)]])
    image = np.stack([db[a : max(b, a + 1)].max(axis=0) for a, b in itertools.pairwise(edges)])
    return image, top


def _hertz(f: float) -> str:
    return f"{f / 1000:g} kHz" if f >= 1000 else f"{f:g} Hz"


def _keep(png: bytes, target: Path) -> None:
    fd, tmp = tempfile.mkstemp(prefix=".tunesmith-", suffix=".png", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(png)
        os.replace(tmp, target)
    except OSError:  # a full disk: served, not kept; drawn again next time
        Path(tmp).unlink(missing_ok=True)

"""The spectrogram of a finished job: drawn once and kept beside its audio (deleted with
the job), in the page's style and at the size the page shows it."""

from __future__ import annotations

import io

import numpy as np
import pytest

from tunesmith.server import pictures

pytest.importorskip("matplotlib")


def test_the_spectrogram_is_drawn_once_and_kept(client, submit, wait_job, monkeypatch):
    """Was: drawn again (matplotlib, ~0.5 s) on every request."""
    drawn = []
    real = pictures.render
    monkeypatch.setattr(pictures, "render", lambda *a: drawn.append(1) or real(*a))
    job = wait_job(client, submit(client, "pictured", 1.0))
    url = f"/v1/generations/{job['id']}/spectrogram"
    first, second = client.get(url), client.get(url)
    assert first.status_code == second.status_code == 200
    assert first.content == second.content and first.content.startswith(b"\x89PNG")
    assert len(drawn) == 1
    kept = client.app.state.tunesmith.store.audio_dir / f"{job['id']}.png"  # type: ignore[attr-defined]
    assert kept.read_bytes() == first.content
    assert client.delete(f"/v1/generations/{job['id']}").status_code == 204
    assert not kept.exists()


def test_the_picture_has_the_page_s_size_and_look():
    from matplotlib.image import imread

    t = np.arange(32000 * 2) / 32000
    tone = np.sin(2 * np.pi * 440 * t) * (t < 1) + np.sin(2 * np.pi * 2000 * t) * (t >= 1)
    import torch

    png = pictures.render(torch.from_numpy(0.3 * tone).float()[None], 32000)
    image = imread(io.BytesIO(png))  # [H, W, RGBA] in 0..1
    assert image.shape[:2] == (320, 1000)  # twice the ~500 x 160 the page shows: sharp on HiDPI
    assert image[0, 0, 3] == 0  # a transparent margin: the card's colour shows around it
    panel = image[20:260, 150:950]
    assert panel[..., 3].min() == 1.0  # an opaque panel...
    assert np.median(panel[..., :3]) < 0.25  # ...dark where there is no sound (both themes)


def test_log_rows_find_a_tone_where_it_is():
    import torch

    t = np.arange(32000) / 32000
    image, top = pictures.log_spectrogram(
        torch.from_numpy(np.sin(2 * np.pi * 1000 * t)).float()[None], 32000
    )
    assert image.shape[0] == pictures.ROWS and top == 16000
    rows = np.geomspace(pictures.LOWEST_HZ, top, pictures.ROWS)
    loudest = rows[image.mean(axis=1).argmax()]
    assert 900 < loudest < 1100

"""The web page driven in a real headless Chromium (Debian's, via Playwright), against a real
uvicorn server on a free loopback port: type a prompt, generate, play, download.

Skipped when /usr/bin/chromium or the playwright package is missing. Set
TUNESMITH_SCREENSHOTS=folder to keep screenshots of the page.
"""

from __future__ import annotations

import os
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import soundfile as sf

from tunesmith.server import create_app

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]  # fmt: skip
pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (pip install playwright)")
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        yield browser
        browser.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def serve_app(tiny_model: Any, tmp_path: Path) -> Iterator[Any]:
    """serve_app(model=None, **create_app_kwargs) -> base URL of a uvicorn server running in a
    thread (the tiny model unless another is given)."""
    import uvicorn

    servers: list[tuple[uvicorn.Server, threading.Thread]] = []
    apps: list[Any] = []

    def start(model: Any = None, **kwargs: Any) -> str:
        port = _free_port()
        app = create_app(model or tiny_model, tmp_path / f"data-{port}", **kwargs)
        apps.append(app)
        config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 20
        while not server.started:
            assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
            time.sleep(0.02)
        servers.append((server, thread))
        return f"http://127.0.0.1:{port}"

    start.apps = apps  # type: ignore[attr-defined]  # the tests reach a server's worker
    yield start
    for server, thread in servers:
        server.should_exit = True
        thread.join(20)


def _screenshot(page: Any, name: str) -> None:
    folder = os.environ.get("TUNESMITH_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / name), full_page=True)


def _generate_and_download(page: Any, prompt: str, tmp_path: Path) -> Path:
    page.fill("#prompt", prompt)
    page.fill("#duration", "0.5")
    page.click("#generate")
    page.wait_for_selector("#result:not([hidden])", timeout=30_000)
    assert page.get_attribute("#player", "src").startswith("blob:")
    assert page.inner_text("#job-status") == "done"
    with page.expect_download(timeout=10_000) as download_info:
        page.click("#download")
    download = download_info.value
    target = tmp_path / download.suggested_filename
    download.save_as(str(target))
    return target


def test_generate_listen_and_download_in_the_page(browser, serve_app, tmp_path):
    url = serve_app()
    page = browser.new_page(viewport={"width": 1200, "height": 820}, accept_downloads=True)
    errors: list[str] = []
    page.on("pageerror", lambda err: errors.append(str(err)))
    page.goto(url)
    page.wait_for_selector("#health-dot.ok")
    saved = _generate_and_download(page, "bright chiptune melody", tmp_path)
    assert saved.name.startswith("bright-chiptune-melody-") and saved.suffix == ".wav"
    info = sf.info(str(saved))
    assert info.format == "WAV" and info.samplerate == 32000 and info.frames == 16000
    page.wait_for_selector("#history .item canvas")
    assert "bright chiptune melody" in page.inner_text("#history")
    page.wait_for_function("document.getElementById('player').duration > 0.49")
    page.click("#advanced summary")
    _screenshot(page, "after-generation.png")
    assert errors == []


def test_the_page_asks_for_the_key_of_a_locked_server(browser, serve_app, tmp_path):
    url = serve_app(api_key="page-key")
    page = browser.new_page(accept_downloads=True)
    page.goto(url)
    page.wait_for_selector("#key-row:not([hidden])")
    page.fill("#api-key", "page-key")
    saved = _generate_and_download(page, "locked but fine", tmp_path)
    assert sf.info(str(saved)).frames == 16000


def test_the_api_docs_render_offline(browser, serve_app):
    """Was: /docs loaded Swagger UI from a CDN, a blank page offline. Every request that is
    not to this server is refused here, as it would fail on a machine without a network."""
    url = serve_app()
    page = browser.new_page()
    foreign: list[str] = []

    def only_local(route: Any) -> None:
        if route.request.url.startswith(url):
            route.continue_()
        else:
            foreign.append(route.request.url)
            route.abort()

    page.route("**/*", only_local)
    page.goto(f"{url}/docs")
    page.wait_for_selector(".opblock", timeout=20_000)
    assert page.locator(".opblock").count() >= 6
    assert foreign == []


def test_continue_an_uploaded_file_then_run_it_again(browser, serve_app, tmp_path):
    """The page's upload: a file chosen for the continuation is uploaded, the job continues
    it (its audio is the prompt's second and the new half second), the result shows a
    spectrogram, and "Again" runs the same settings (the upload included) once more."""
    import numpy as np

    clip = tmp_path / "intro.flac"
    t = np.arange(44100) / 44100
    sf.write(clip, 0.3 * np.sin(2 * np.pi * 330 * t), 44100)
    url = serve_app()
    page = browser.new_page(viewport={"width": 1200, "height": 900}, accept_downloads=True)
    errors: list[str] = []
    page.on("pageerror", lambda err: errors.append(str(err)))
    page.goto(url)
    page.wait_for_selector("#health-dot.ok")
    page.click("#advanced summary")
    page.set_input_files("#audio-prompt-file", str(clip))
    page.fill("#seed", "5")
    saved = _generate_and_download(page, "carry on", tmp_path)
    assert sf.info(saved).duration == pytest.approx(1.5, abs=0.03)
    page.wait_for_function("document.getElementById('spectrogram').naturalWidth > 0")
    page.wait_for_selector("#history .item:has-text('continues an upload')")
    _screenshot(page, "continuation.png")
    page.locator("#history .item").first.get_by_role("button", name="Again").click()
    page.wait_for_function(
        "document.querySelectorAll('#history .item').length === 2", timeout=30_000
    )
    page.wait_for_selector("#result:not([hidden])", timeout=30_000)
    first, second = page.locator("#history .item .item-meta").all_inner_texts()[:2]
    assert "continues an upload" in first and "continues an upload" in second
    assert "seed 5" in first and "seed 5" in second
    assert errors == []


def test_a_piece_longer_than_the_window_from_the_page(browser, serve_app, tmp_path):
    url = serve_app()
    page = browser.new_page(accept_downloads=True)
    page.goto(url)
    page.wait_for_selector("#health-dot.ok")
    assert page.get_attribute("#duration", "max") == "3600"
    page.fill("#prompt", "a long one")
    page.fill("#duration", "40")
    page.click("#generate")
    page.wait_for_selector("#result:not([hidden])", timeout=120_000)
    assert page.inner_text("#job-text").startswith("40 s of music, made in ")


def test_a_melody_job_from_the_page(browser, serve_app, tmp_path):
    """On a melody checkpoint the page offers a melody upload, and the job follows it."""
    import numpy as np

    from tunesmith import MusicGen
    from tunesmith.testing.checkpoints import build_melody_model, save_checkpoint

    folder = save_checkpoint(build_melody_model(seed=7), tmp_path / "melody-model")
    url = serve_app(MusicGen.from_pretrained(folder, device="cpu"))
    tune = tmp_path / "tune.wav"
    t = np.arange(32000 * 2) / 32000
    sf.write(tune, 0.3 * np.sin(2 * np.pi * 262 * t * (1 + (t > 1))), 32000)
    page = browser.new_page(accept_downloads=True)
    page.goto(url)
    page.wait_for_selector("#health-dot.ok")
    page.click("#advanced summary")
    assert page.is_visible("#melody-file")
    page.set_input_files("#melody-file", str(tune))
    saved = _generate_and_download(page, "hummed tune", tmp_path)
    assert sf.info(saved).duration == pytest.approx(0.5, abs=0.03)
    page.wait_for_selector("#history .item:has-text('follows a melody')")


def test_the_melody_upload_is_hidden_on_text_models(browser, serve_app):
    page = browser.new_page()
    page.goto(serve_app())
    page.wait_for_selector("#health-dot.ok")
    page.click("#advanced summary")
    assert not page.is_visible("#melody-file")


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_progress_reads_as_music_and_the_spectrogram_fits_the_page(
    browser, serve_app, tmp_path, scheme
):
    """Was: "3% · step 337 of 12039" and "12.0 s in 1.5 s"; a report-style spectrogram."""
    url = serve_app()
    worker = serve_app.apps[-1].state.tunesmith.worker
    worker.step_hook = lambda ids: time.sleep(0.004)  # a few seconds: progress to read
    page = browser.new_page(viewport={"width": 1200, "height": 900}, color_scheme=scheme)
    errors: list[str] = []
    page.on("pageerror", lambda err: errors.append(str(err)))
    page.goto(url)
    page.wait_for_selector("#health-dot.ok")
    page.fill("#prompt", "slow strings")
    page.fill("#duration", "12")
    page.click("#generate")
    page.wait_for_function(
        "document.getElementById('job-text').textContent.includes('left')", timeout=30_000
    )
    running = page.inner_text("#job-text")
    assert re.fullmatch(
        r"[\d.]+ s of 12 s of music made · about [\d.]+ (s|min)( \d+ s)? left", running
    ), running
    _screenshot(page, f"progress-{scheme}.png")
    page.wait_for_selector("#result:not([hidden])", timeout=60_000)
    done = page.inner_text("#job-text")
    assert re.fullmatch(r"12 s of music, made in [\d.]+ s", done), done
    page.wait_for_function("document.getElementById('spectrogram').naturalWidth > 0")
    natural, shown = page.evaluate(
        "[document.getElementById('spectrogram').naturalWidth,"
        " document.getElementById('spectrogram').getBoundingClientRect().width]"
    )
    assert natural == 1000 and 400 <= shown <= 600  # drawn at twice the size it is shown
    page.locator("#result").screenshot(path=str(tmp_path / "result.png"))
    _screenshot(page, f"result-{scheme}.png")
    assert errors == []

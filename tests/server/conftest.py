"""Fixtures for the server tests: apps over the tiny random model, each on its own data folder,
with the worker thread running (TestClient's lifespan), and a helper that waits for a job."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.server.local import LocalClient
from tests.server.processes import Server
from tunesmith.server import create_app
from tunesmith.server.worker import Worker

LIVE = ("queued", "running")
MakeClient = Callable[..., TestClient]
WaitJob = Callable[[TestClient, str], dict[str, Any]]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "browser: drives the web page in headless Chromium (skipped without it)"
    )


@pytest.fixture
def make_client(tiny_model: Any, tmp_path: Path) -> Iterator[MakeClient]:
    """make_client(data_dir=None, **create_app_kwargs) -> a started TestClient."""
    with ExitStack() as stack:

        def make(data_dir: Path | None = None, **kwargs: Any) -> TestClient:
            app = create_app(tiny_model, data_dir or tmp_path / "data", **kwargs)
            return stack.enter_context(LocalClient(app))

        yield make


@pytest.fixture
def client(make_client: MakeClient) -> TestClient:
    return make_client()


@pytest.fixture
def worker_of() -> Callable[[TestClient], Worker]:
    """worker_of(client) -> the app's Worker (to pause it, resume it or hook its steps)."""

    def get(client: TestClient) -> Worker:
        worker: Worker = client.app.state.tunesmith.worker  # type: ignore[attr-defined]
        return worker

    return get


@pytest.fixture
def wait_job() -> WaitJob:
    """wait_job(client, id) -> the job's JSON once it has left queued/running (30 s at most)."""

    def wait(client: TestClient, job_id: str, timeout: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            job: dict[str, Any] = client.get(f"/v1/generations/{job_id}").json()
            if job["status"] not in LIVE:
                return job
            if time.monotonic() > deadline:
                raise AssertionError(f"job {job_id} still {job['status']} after {timeout}s")
            time.sleep(0.02)

    return wait


@pytest.fixture
def wait_running() -> Callable[[TestClient, str], None]:
    """wait_running(client, id): returns once the job is running (asserts within 10 s)."""

    def wait(client: TestClient, job_id: str) -> None:
        deadline = time.monotonic() + 10
        while client.get(f"/v1/generations/{job_id}").json()["status"] != "running":
            assert time.monotonic() < deadline, f"job {job_id} did not start within 10 s"
            time.sleep(0.005)

    return wait


@pytest.fixture
def submit() -> Callable[..., str]:
    """submit(client, prompt="x", duration=0.3, **fields) -> the new job's id (asserts 202)."""

    def post(
        client: TestClient, prompt: str = "a tune", duration: float = 0.3, **fields: Any
    ) -> str:
        response = client.post(
            "/v1/generations", json={"prompt": prompt, "duration": duration, **fields}
        )
        assert response.status_code == 202, response.text
        job_id: str = response.json()["id"]
        return job_id

    return post


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A real 4 MiB disk (tmpfs), made and removed here; a skip where mounting is not
    permitted."""
    mount = tmp_path / "small-disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip() or 'not root'}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(folder: Path, leave: int = 0) -> Path:
    """Fill the disk `folder` is on, to the last byte (or all but `leave` bytes); the filler
    file, to delete to give the room back."""
    import os

    filler = folder / "filler"
    with open(filler, "ab", buffering=0) as f:
        for size in (65536, 4096, 1):
            try:
                while os.statvfs(folder).f_bavail * os.statvfs(folder).f_frsize > leave + size:
                    f.write(b"\0" * size)
            except OSError:
                pass
    return filler


@pytest.fixture
def servers() -> Iterator[list[Server]]:
    """A list to put started `tunesmith serve` processes in; each is killed at the end."""
    started: list[Server] = []
    yield started
    for server in started:
        server.stop()

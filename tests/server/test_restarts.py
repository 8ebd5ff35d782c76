"""No job lost across restarts, with a real `tunesmith serve` process on a loopback port:
`kill -9` with 4 jobs running and 15 queued ends, after a restart, with all 19 done; SIGTERM
drains (the running batch finishes, nothing new starts) and the queued jobs run after the
restart. Bounded: every wait has a deadline, and the processes are killed at the end."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Server:
    def __init__(self, checkpoint: Path, data: Path, log: Path, *extra: str) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = [
            sys.executable, "-m", "tunesmith", "serve", "--model", str(checkpoint),
            "--device", "cpu", "--port", str(self.port), "--data-dir", str(data),
            "--max-batch", "4", "--max-queue", "32", "--min-free-mb", "0", *extra,
        ]  # fmt: skip
        self.process = subprocess.Popen(command, stdout=log.open("a"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while True:
            assert self.process.poll() is None, log.read_text()
            try:
                self.get("/healthz")
                break
            except OSError:
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.1)

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=10) as response:
            return json.loads(response.read())

    def post(self, body: dict[str, Any]) -> str:
        request = urllib.request.Request(
            self.url + "/v1/generations", data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"}, method="POST",
        )  # fmt: skip
        with urllib.request.urlopen(request, timeout=10) as response:
            job_id: str = json.loads(response.read())["id"]
            return job_id

    def running(self) -> int:
        return int(self.get("/v1/generations?status=running&limit=1")["total"])

    def wait_all(self, ids: list[str], status: str = "done", timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while True:
            states = {i: self.get(f"/v1/generations/{i}")["status"] for i in ids}
            if all(s == status for s in states.values()):
                return
            assert time.monotonic() < deadline, states
            time.sleep(0.2)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(30)


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[list[Server]]:
    started: list[Server] = []
    yield started
    for server in started:
        server.stop()


def _until(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def _statuses(data: Path) -> dict[str, str]:
    """Read the jobs table directly (opening a JobStore would settle it)."""
    with sqlite3.connect(data / "tunesmith.db") as db:
        return dict(db.execute("SELECT id, status FROM jobs").fetchall())


def test_kill_9_with_4_running_and_15_queued_loses_nothing(tiny_checkpoint, tmp_path, servers):
    data, log = tmp_path / "data", tmp_path / "server.log"
    first = Server(tiny_checkpoint, data, log)
    servers.append(first)
    blocker = first.post({"prompt": "blocker", "duration": 20.0})  # the queue fills behind it
    _until(lambda: first.running() == 1, 30, "the blocker to start")
    jobs = [first.post({"prompt": f"job {i}", "duration": 20.0}) for i in range(19)]
    _until(lambda: first.get(f"/v1/generations/{blocker}")["status"] == "done", 120, "blocker")
    _until(lambda: first.running() == 4, 30, "a batch of 4 to start")
    assert first.get("/v1/generations?status=queued&limit=1")["total"] == 15
    first.process.send_signal(signal.SIGKILL)
    first.process.wait(10)
    statuses = _statuses(data)
    assert sorted(statuses[j] for j in jobs).count("running") == 4

    second = Server(tiny_checkpoint, data, log)
    servers.append(second)
    second.wait_all(jobs)
    for job_id in jobs:
        job = second.get(f"/v1/generations/{job_id}")
        assert job["audio_seconds"] == pytest.approx(20.0, abs=0.05)


def test_sigterm_drains_and_the_queue_survives(tiny_checkpoint, tmp_path, servers):
    data, log = tmp_path / "data", tmp_path / "server.log"
    first = Server(tiny_checkpoint, data, log, "--drain-seconds", "120")
    servers.append(first)
    running = first.post({"prompt": "finishes", "duration": 20.0, "seed": 1})
    _until(lambda: first.running() == 1, 30, "the job to start")
    queued = [first.post({"prompt": f"waits {i}", "duration": 1.0, "seed": i}) for i in range(5)]
    began = time.monotonic()
    first.process.send_signal(signal.SIGTERM)
    # uvicorn ends by raising the signal again once shut down: a SIGTERM death, as a
    # supervisor expects after asking for one.
    assert first.process.wait(150) in (0, -signal.SIGTERM), log.read_text()
    statuses = _statuses(data)
    assert statuses[running] == "done"  # the running batch finished within the drain
    assert [statuses[q] for q in queued] == ["queued"] * 5  # nothing new started
    assert time.monotonic() - began < 150

    second = Server(tiny_checkpoint, data, log)
    servers.append(second)
    second.wait_all(queued)
    assert os.path.getsize(data / "tunesmith.db") > 0

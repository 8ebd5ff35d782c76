"""Real `tunesmith serve` processes on loopback ports, for the tests that need signals and
sockets (`servers` in conftest stops them all)."""

from __future__ import annotations

import json
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any


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


def until(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def statuses(data: Path) -> dict[str, str]:
    """Read the jobs table directly (opening a JobStore would settle it)."""
    with sqlite3.connect(data / "tunesmith.db") as db:
        return dict(db.execute("SELECT id, status FROM jobs").fetchall())

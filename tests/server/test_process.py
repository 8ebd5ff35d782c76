"""`tunesmith serve` as a process on a loopback port: SIGTERM keeps answering until the
drain ends, a port in use is one line before the model loads, and --help says where the
data folder goes. Bounded: every wait has a deadline; the processes are killed at the end."""

from __future__ import annotations

import http.client
import json
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from tests.server.processes import Server, statuses, until
from tunesmith.cli.main import main


def _status(url: str, method: str = "GET", body: dict | None = None) -> int:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()
            return int(response.status)
    except urllib.error.HTTPError as err:
        return int(err.code)


def test_sigterm_keeps_answering_until_the_drain_ends(tiny_checkpoint, tmp_path, servers):
    """Was: from about 1 s after SIGTERM, connections were refused and open keep-alive ones
    dropped, where the README promised 503 during the drain."""
    data, log = tmp_path / "data", tmp_path / "server.log"
    server = Server(tiny_checkpoint, data, log, "--drain-seconds", "3")
    servers.append(server)
    job = server.post({"prompt": "long", "duration": 3000.0, "seed": 1})
    until(lambda: server.running() == 1, 30, "the job to start")
    kept = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)  # keep-alive
    kept.request("GET", "/healthz")
    assert kept.getresponse().read()
    listening = urllib.request.urlopen(f"{server.url}/v1/generations/{job}/stream", timeout=10)
    assert listening.read(44)[:4] == b"RIFF"
    server.process.send_signal(signal.SIGTERM)
    began = time.monotonic()
    answers = []
    while time.monotonic() - began < 2.0:  # well inside the 3 s drain
        answers.append((
            _status(f"{server.url}/v1/generations", "POST", {"duration": 1.0}),
            _status(f"{server.url}/v1/generations/{job}"),
            _status(f"{server.url}/readyz"),
        ))  # fmt: skip
        kept.request("GET", f"/v1/generations/{job}")
        reply = kept.getresponse()
        assert reply.status == 200 and json.loads(reply.read())["status"] == "running"
        time.sleep(0.1)
    assert set(answers) == {(503, 200, 503)}, answers
    late = urllib.request.urlopen(f"{server.url}/v1/generations/{job}/stream", timeout=10)
    assert late.status == 200 and len(late.read(44 + 32000)) == 44 + 32000  # joins the job
    assert len(listening.read(32000)) == 32000  # the first listener still hears it
    assert server.process.wait(30) in (0, -signal.SIGTERM), log.read_text()
    assert time.monotonic() - began < 15
    assert statuses(data)[job] == "queued"  # the drain ran out: back in the queue


def _busy_port() -> tuple[socket.socket, int]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock, sock.getsockname()[1]


def test_a_port_in_use_is_one_line_before_the_model_loads(tiny_checkpoint, tmp_path):
    """Was: uvicorn's message, after the model had loaded."""
    sock, port = _busy_port()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "tunesmith", "serve", "--model", str(tiny_checkpoint),
             "--device", "cpu", "--port", str(port), "--data-dir", str(tmp_path / "d")],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    finally:
        sock.close()
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and f"port {port}" in lines[0] and "--port" in lines[0], done.stderr
    assert "tunesmith:" not in done.stdout  # the model was never loaded nor served


def test_serve_help_says_where_the_data_folder_goes(capsys, monkeypatch):
    """Was: --help did not say (it made ./tunesmith-data)."""
    monkeypatch.setenv("COLUMNS", "200")
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "default ./tunesmith-data" in text and "--api-keys-file" in text

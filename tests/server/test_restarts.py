"""No job lost across restarts, with a real `tunesmith serve` process on a loopback port:
`kill -9` with 4 jobs running and 15 queued ends, after a restart, with all 19 done; SIGTERM
drains (the running batch finishes, nothing new starts) and the queued jobs run after the
restart. Bounded: every wait has a deadline, and the processes are killed at the end."""

from __future__ import annotations

import os
import signal
import time

import pytest

from tests.server.processes import Server, statuses, until


def test_kill_9_with_4_running_and_15_queued_loses_nothing(tiny_checkpoint, tmp_path, servers):
    data, log = tmp_path / "data", tmp_path / "server.log"
    first = Server(tiny_checkpoint, data, log)
    servers.append(first)
    blocker = first.post({"prompt": "blocker", "duration": 20.0})  # the queue fills behind it
    until(lambda: first.running() == 1, 30, "the blocker to start")
    jobs = [first.post({"prompt": f"job {i}", "duration": 20.0}) for i in range(19)]
    until(lambda: first.get(f"/v1/generations/{blocker}")["status"] == "done", 120, "blocker")
    until(lambda: first.running() == 4, 30, "a batch of 4 to start")
    assert first.get("/v1/generations?status=queued&limit=1")["total"] == 15
    first.process.send_signal(signal.SIGKILL)
    first.process.wait(10)
    found = statuses(data)
    assert sorted(found[j] for j in jobs).count("running") == 4

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
    until(lambda: first.running() == 1, 30, "the job to start")
    queued = [first.post({"prompt": f"waits {i}", "duration": 1.0, "seed": i}) for i in range(5)]
    began = time.monotonic()
    first.process.send_signal(signal.SIGTERM)
    # uvicorn ends by raising the signal again once shut down: a SIGTERM death, as a
    # supervisor expects after asking for one.
    assert first.process.wait(150) in (0, -signal.SIGTERM), log.read_text()
    found = statuses(data)
    assert found[running] == "done"  # the running batch finished within the drain
    assert [found[q] for q in queued] == ["queued"] * 5  # nothing new started
    assert time.monotonic() - began < 150

    second = Server(tiny_checkpoint, data, log)
    servers.append(second)
    second.wait_all(queued)
    assert os.path.getsize(data / "tunesmith.db") > 0

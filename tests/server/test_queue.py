"""The bounded queue, batching of compatible jobs, cancellation, and failures."""

from __future__ import annotations

import threading
import time

import pytest


def wait_idle(worker, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while worker.counts() != (0, 0):
        assert time.monotonic() < deadline, worker.counts()
        time.sleep(0.01)


def test_a_full_queue_answers_429_with_retry_after(make_client, submit, wait_job, worker_of):
    client = make_client(max_queue=2)
    worker_of(client).pause()
    ids = [submit(client), submit(client)]
    response = client.post("/v1/generations", json={"prompt": "one too many", "duration": 0.2})
    assert response.status_code == 429 and "full" in response.json()["detail"]
    assert int(response.headers["retry-after"]) >= 1
    assert client.get("/v1/generations").json()["total"] == 2
    worker_of(client).resume()
    assert [wait_job(client, i)["status"] for i in ids] == ["done", "done"]
    assert client.post("/v1/generations", json={"duration": 0.2}).status_code == 202


def test_compatible_jobs_share_a_batch_and_others_run_alone(
    make_client, submit, wait_job, worker_of
):
    client = make_client(max_batch=4)
    worker_of(client).pause()
    same = [submit(client, f"tune {i}", 0.3, top_k=50) for i in range(3)]
    longer = submit(client, "longer", 0.4, top_k=50)
    seeded = [submit(client, "seeded", 0.3, top_k=50, seed=1) for _ in range(2)]
    other_fmt = submit(client, "flac too", 0.3, top_k=50, format="flac")
    worker_of(client).resume()
    jobs = {i: wait_job(client, i) for i in [*same, longer, *seeded, other_fmt]}
    assert all(j["status"] == "done" for j in jobs.values())
    assert [jobs[i]["batch_size"] for i in same] == [4, 4, 4]  # the flac job joins them
    assert jobs[other_fmt]["batch_size"] == 4 and jobs[other_fmt]["media_type"] == "audio/flac"
    assert jobs[longer]["batch_size"] == 1 and jobs[longer]["audio_seconds"] == pytest.approx(0.4)
    assert [jobs[i]["batch_size"] for i in seeded] == [1, 1]
    audio = {client.get(jobs[i]["audio_url"]).content for i in same}
    assert len(audio) == 3  # each row is its own piece


def test_batches_never_exceed_max_batch(make_client, submit, wait_job, worker_of):
    client = make_client(max_batch=2)
    worker_of(client).pause()
    ids = [submit(client, f"t{i}", 0.2) for i in range(5)]
    worker_of(client).resume()
    assert [wait_job(client, i)["batch_size"] for i in ids] == [2, 2, 2, 2, 1]


def test_cancel_a_queued_job(client, submit, wait_job, worker_of):
    worker_of(client).pause()
    job_id = submit(client)
    response = client.delete(f"/v1/generations/{job_id}")
    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    worker_of(client).resume()
    wait_idle(worker_of(client))
    job = client.get(f"/v1/generations/{job_id}").json()
    assert job["status"] == "cancelled" and job["error"] == "cancelled by request"
    assert job["timings"]["started_at"] is None
    assert client.get(f"/v1/generations/{job_id}/audio").status_code == 409
    assert client.delete(f"/v1/generations/{job_id}").status_code == 204  # now: delete it


def _hold_first_step(worker) -> tuple[threading.Event, threading.Event]:
    started, release = threading.Event(), threading.Event()

    def hook(ids: list[str]) -> None:
        started.set()
        assert release.wait(10)

    worker.step_hook = hook
    return started, release


def test_cancel_a_running_job_stops_it_within_a_step(client, submit, worker_of):
    worker = worker_of(client)
    started, release = _hold_first_step(worker)
    job_id = submit(client, "long one", 10.0)
    assert started.wait(10)
    assert client.get(f"/v1/generations/{job_id}").json()["status"] == "running"
    response = client.delete(f"/v1/generations/{job_id}")
    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    release.set()
    wait_idle(worker)
    job = client.get(f"/v1/generations/{job_id}").json()
    assert job["status"] == "cancelled"
    assert job["progress"]["steps_done"] == 1 and job["progress"]["steps_total"] > 500
    assert list(client.app.state.tunesmith.store.audio_dir.iterdir()) == []


def test_cancelling_one_job_of_a_batch_keeps_the_others(client, submit, wait_job, worker_of):
    worker = worker_of(client)
    worker.pause()
    keep, drop = submit(client, "keep"), submit(client, "drop")
    started, release = _hold_first_step(worker)
    worker.resume()
    assert started.wait(10)
    assert client.delete(f"/v1/generations/{drop}").json()["status"] == "cancelled"
    release.set()
    assert wait_job(client, keep)["status"] == "done"
    wait_idle(worker)
    assert client.get(f"/v1/generations/{drop}").json()["status"] == "cancelled"
    assert len(list(client.app.state.tunesmith.store.audio_dir.iterdir())) == 1


def test_a_stream_ends_when_its_job_is_cancelled(client, submit, worker_of):
    worker_of(client).pause()
    job_id = submit(client)
    with client.stream("GET", f"/v1/generations/{job_id}/stream") as stream:
        client.delete(f"/v1/generations/{job_id}")
        assert b"".join(stream.iter_bytes())[:4] == b"RIFF"


def test_a_failed_generation_is_recorded_and_the_worker_goes_on(
    client, submit, wait_job, worker_of
):
    def explode(ids: list[str]) -> None:
        raise RuntimeError("boom")

    worker_of(client).step_hook = explode
    failed = wait_job(client, submit(client))
    assert failed["status"] == "failed" and "RuntimeError: boom" in failed["error"]
    assert client.get(f"/v1/generations/{failed['id']}/stream").status_code == 409
    worker_of(client).step_hook = None
    assert wait_job(client, submit(client))["status"] == "done"

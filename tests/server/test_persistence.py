"""A restart keeps every finished job and marks unfinished ones interrupted: none lost, none
run twice."""

from __future__ import annotations

import time

from fastapi.testclient import TestClient

from tunesmith.server import create_app
from tunesmith.server.schemas import GenerationRequest
from tunesmith.server.store import JobStore


def test_finished_jobs_survive_a_restart(tiny_model, tmp_path, submit, wait_job):
    data = tmp_path / "data"
    with TestClient(create_app(tiny_model, data)) as first:
        done = wait_job(first, submit(first, "kept", format="flac"))
        failed_id = submit(first, "cancelled one")
        first.delete(f"/v1/generations/{failed_id}")
        audio = first.get(done["audio_url"]).content
    with TestClient(create_app(tiny_model, data)) as second:
        again = second.get(f"/v1/generations/{done['id']}").json()
        assert again["status"] == "done" and again["parameters"] == done["parameters"]
        assert again["timings"] == done["timings"] and again["progress"] == done["progress"]
        assert second.get(done["audio_url"]).content == audio
        assert second.get(f"/v1/generations/{done['id']}/peaks").status_code == 200
        statuses = {j["id"]: j["status"] for j in second.get("/v1/generations").json()["items"]}
        assert statuses[done["id"]] == "done" and len(statuses) == 2


def test_jobs_left_running_or_queued_by_a_crash_become_interrupted(tiny_model, tmp_path):
    data = tmp_path / "data"
    store = JobStore(data)  # what a process that died mid-job leaves behind
    store.insert(
        "ran", GenerationRequest.model_validate({"prompt": "a", "duration": 0.2}), time.time()
    )
    store.mark_running(["ran"], time.time(), 10)
    store.insert(
        "waited", GenerationRequest.model_validate({"prompt": "b", "duration": 0.2}), time.time()
    )
    store.close()
    (data / "audio" / ".tunesmith-half.wav").write_bytes(b"RIFF")
    with TestClient(create_app(tiny_model, data)) as client:
        time.sleep(0.3)  # give the worker time to (wrongly) pick anything up
        for job_id in ("ran", "waited"):
            job = client.get(f"/v1/generations/{job_id}").json()
            assert job["status"] == "interrupted" and "submit it again" in job["error"]
            assert job["audio_url"] is None and job["timings"]["finished_at"]
            assert client.get(f"/v1/generations/{job_id}/audio").status_code == 409
            assert client.get(f"/v1/generations/{job_id}/stream").status_code == 409
        assert client.get("/healthz").json()["queue"]["queued"] == 0
        assert list((data / "audio").iterdir()) == []
        assert client.delete("/v1/generations/ran").status_code == 204


def test_a_graceful_stop_interrupts_queued_and_running_jobs(
    tiny_model, tmp_path, submit, worker_of
):
    data = tmp_path / "data"
    with TestClient(create_app(tiny_model, data)) as client:
        worker = worker_of(client)
        worker.step_hook = lambda ids: time.sleep(0.01)
        running = submit(client, "long", 20.0)
        deadline = time.monotonic() + 10
        while client.get(f"/v1/generations/{running}").json()["status"] != "running":
            assert time.monotonic() < deadline
            time.sleep(0.01)
        worker.pause()
        queued = submit(client, "waiting")
    with TestClient(create_app(tiny_model, data)) as client:
        for job_id in (running, queued):
            assert client.get(f"/v1/generations/{job_id}").json()["status"] == "interrupted"
        assert client.get(f"/v1/generations/{running}").json()["progress"]["steps_done"] > 0


def test_audio_file_missing_on_disk_is_404_not_500(tiny_model, tmp_path, submit, wait_job):
    with TestClient(create_app(tiny_model, tmp_path)) as client:
        job = wait_job(client, submit(client))
        for path in (tmp_path / "audio").iterdir():
            path.unlink()
        response = client.get(job["audio_url"])
        assert response.status_code == 404 and "missing" in response.json()["detail"]

"""A restart keeps every finished job and runs every unfinished one: none lost, none run
twice, a job the server kept dying on failed after --max-attempts starts."""

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


def test_jobs_left_running_or_queued_by_a_crash_run_after_the_restart(
    tiny_model, tmp_path, wait_job
):
    data = tmp_path / "data"
    store = JobStore(data)  # what a process that died mid-job leaves behind
    for job_id, prompt in (("ran", "a"), ("waited", "b"), ("doomed", "c")):
        request = GenerationRequest.model_validate({"prompt": prompt, "duration": 0.2, "seed": 3})
        store.insert(job_id, request, time.time())
    store.mark_running(["ran", "doomed"], time.time(), 10)
    for _ in range(2):  # two more starts of "doomed", each ended by the server dying
        store._db.execute("UPDATE jobs SET status='queued' WHERE id='doomed'")
        store.mark_running(["doomed"], time.time(), 10)
    assert store.get("doomed").attempts == 3
    store.close()
    (data / "audio" / ".tunesmith-half.wav").write_bytes(b"RIFF")
    with TestClient(create_app(tiny_model, data, max_attempts=3)) as client:
        for job_id in ("ran", "waited"):
            job = wait_job(client, job_id)
            assert job["status"] == "done", job
            assert client.get(f"/v1/generations/{job_id}/audio").status_code == 200
        doomed = client.get("/v1/generations/doomed").json()
        assert doomed["status"] == "failed" and "at most 3 attempts" in doomed["error"]
        assert not any(p.name.startswith(".tunesmith-") for p in (data / "audio").iterdir())
        seeded = client.get("/v1/generations/ran/audio").content
    # The same seeded job run again from scratch gives the same audio.
    with TestClient(create_app(tiny_model, tmp_path / "other")) as client:
        again = client.post("/v1/generations", json={"prompt": "a", "duration": 0.2, "seed": 3})
        job = wait_job(client, again.json()["id"])
        assert client.get(job["audio_url"]).content == seeded


def test_a_stop_drains_then_requeues_and_a_restart_finishes_everything(
    tiny_model, tmp_path, submit, worker_of, wait_job, wait_running
):
    data = tmp_path / "data"
    with TestClient(create_app(tiny_model, data, drain_seconds=0.2)) as client:
        worker = worker_of(client)
        worker.step_hook = lambda ids: time.sleep(0.01)
        running = submit(client, "long", 20.0)
        wait_running(client, running)
        worker.pause()
        queued = submit(client, "waiting")
        began = time.monotonic()
    assert time.monotonic() - began < 5  # the drain gave up after 0.2 s, not at the job's end
    store = JobStore(data)
    assert {store.get(i).status for i in (running, queued)} == {"queued"}
    store.close()
    with TestClient(create_app(tiny_model, data)) as client:
        for job_id in (running, queued):
            assert wait_job(client, job_id)["status"] == "done"


def test_a_stop_lets_the_running_batch_finish_within_the_drain(
    tiny_model, tmp_path, submit, worker_of, wait_running
):
    data = tmp_path / "data"
    with TestClient(create_app(tiny_model, data, drain_seconds=30)) as client:
        worker = worker_of(client)
        worker.step_hook = lambda ids: time.sleep(0.002)
        running = submit(client, "short", 1.0)
        wait_running(client, running)
    store = JobStore(data)
    assert store.get(running).status == "done"
    store.close()


def test_audio_file_missing_on_disk_is_404_not_500(tiny_model, tmp_path, submit, wait_job):
    with TestClient(create_app(tiny_model, tmp_path)) as client:
        job = wait_job(client, submit(client))
        for path in (tmp_path / "audio").iterdir():
            path.unlink()
        response = client.get(job["audio_url"])
        assert response.status_code == 404 and "missing" in response.json()["detail"]

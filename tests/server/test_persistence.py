"""A restart keeps every finished job and runs every unfinished one: none lost, none run
twice, a job the server kept dying on failed after --max-attempts starts."""

from __future__ import annotations

import time

from tests.server.local import LocalClient
from tunesmith.server import create_app
from tunesmith.server.schemas import GenerationRequest
from tunesmith.server.store import JobStore


def test_finished_jobs_survive_a_restart(tiny_model, tmp_path, submit, wait_job):
    data = tmp_path / "data"
    with LocalClient(create_app(tiny_model, data)) as first:
        done = wait_job(first, submit(first, "kept", format="flac"))
        failed_id = submit(first, "cancelled one")
        first.delete(f"/v1/generations/{failed_id}")
        audio = first.get(done["audio_url"]).content
    with LocalClient(create_app(tiny_model, data)) as second:
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
    with LocalClient(create_app(tiny_model, data, max_attempts=3)) as client:
        for job_id in ("ran", "waited"):
            job = wait_job(client, job_id)
            assert job["status"] == "done", job
            assert client.get(f"/v1/generations/{job_id}/audio").status_code == 200
        doomed = client.get("/v1/generations/doomed").json()
        assert doomed["status"] == "failed" and "at most 3 attempts" in doomed["error"]
        assert not any(p.name.startswith(".tunesmith-") for p in (data / "audio").iterdir())
        seeded = client.get("/v1/generations/ran/audio").content
    # The same seeded job run again from scratch gives the same audio.
    with LocalClient(create_app(tiny_model, tmp_path / "other")) as client:
        again = client.post("/v1/generations", json={"prompt": "a", "duration": 0.2, "seed": 3})
        job = wait_job(client, again.json()["id"])
        assert client.get(job["audio_url"]).content == seeded


def test_a_stop_drains_then_requeues_and_a_restart_finishes_everything(
    tiny_model, tmp_path, submit, worker_of, wait_job, wait_running
):
    data = tmp_path / "data"
    with LocalClient(create_app(tiny_model, data, drain_seconds=0.2)) as client:
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
    with LocalClient(create_app(tiny_model, data)) as client:
        for job_id in (running, queued):
            assert wait_job(client, job_id)["status"] == "done"


def test_a_stop_lets_the_running_batch_finish_within_the_drain(
    tiny_model, tmp_path, submit, worker_of, wait_running
):
    data = tmp_path / "data"
    with LocalClient(create_app(tiny_model, data, drain_seconds=30)) as client:
        worker = worker_of(client)
        worker.step_hook = lambda ids: time.sleep(0.002)
        running = submit(client, "short", 1.0)
        wait_running(client, running)
    store = JobStore(data)
    assert store.get(running).status == "done"
    store.close()


def test_audio_file_missing_on_disk_is_404_not_500(tiny_model, tmp_path, submit, wait_job):
    with LocalClient(create_app(tiny_model, tmp_path)) as client:
        job = wait_job(client, submit(client))
        for path in (tmp_path / "audio").iterdir():
            path.unlink()
        response = client.get(job["audio_url"])
        assert response.status_code == 404 and "missing" in response.json()["detail"]


OLD_SCHEMA = """
CREATE TABLE jobs (id TEXT PRIMARY KEY, status TEXT NOT NULL, params TEXT NOT NULL,
    created_at REAL NOT NULL, started_at REAL, finished_at REAL,
    steps_done INTEGER NOT NULL DEFAULT 0, steps_total INTEGER NOT NULL DEFAULT 0,
    batch_size INTEGER, audio_file TEXT, audio_seconds REAL, peaks TEXT, error TEXT);
CREATE TABLE idempotency (key TEXT PRIMARY KEY, job_id TEXT NOT NULL, digest TEXT NOT NULL,
    created_at REAL NOT NULL);
"""


def test_a_data_folder_from_before_owners_is_migrated(tiny_model, tmp_path, wait_job):
    """A folder written before jobs had owners (and attempts, and an uploads table) opens:
    its jobs and uploads are kept (made without a key: an admin key sees them), its
    Idempotency-Keys still answer, and the layout's version is recorded."""
    import sqlite3

    import numpy as np
    import soundfile as sf

    from tunesmith.server.keys import ApiKey, KeyRing, digest
    from tunesmith.server.migrations import LATEST

    data = tmp_path / "data"
    (data / "uploads").mkdir(parents=True)
    upload = "ab" * 16
    sf.write(data / "uploads" / upload, np.zeros(8000), 8000, format="WAV")
    with sqlite3.connect(data / "tunesmith.db") as db:
        db.executescript(OLD_SCHEMA)
        params = GenerationRequest.model_validate({"prompt": "old", "duration": 0.2})
        db.execute(
            "INSERT INTO jobs (id, status, params, created_at) VALUES ('old', 'queued', ?, 1.0)",
            (params.model_dump_json(),),
        )
        db.execute("INSERT INTO idempotency VALUES ('retry-1', 'old', 'x', 1.0)")
    keys = KeyRing.of("admin-key")
    with LocalClient(create_app(tiny_model, data, api_keys=keys)) as client:
        client.headers["X-API-Key"] = "admin-key"
        assert wait_job(client, "old")["status"] == "done"  # taken up, run, kept
        assert client.get(f"/v1/uploads/{upload}").json()["seconds"] == 1.0
        assert client.app.state.tunesmith.store.idempotent("retry-1", None) == ("old", "x")  # type: ignore[attr-defined]
    with sqlite3.connect(data / "tunesmith.db") as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == LATEST
        assert db.execute("SELECT owner FROM jobs").fetchone()[0] is None
    user = KeyRing([ApiKey("carol", digest("carol-key"))])  # not an admin: not hers
    with LocalClient(create_app(tiny_model, data, api_keys=user)) as client:
        assert (
            client.get("/v1/generations/old", headers={"X-API-Key": "carol-key"}).status_code == 404
        )

"""A full disk, on a real small disk (a 4 MiB tmpfs): what the service guarantees.

- Queued jobs wait while the data folder's disk is below its floor: the worker takes no job
  while /readyz says 503, and they run once space returns.
- A job whose file does not fit goes back to the queue, and runs once the room it needs is
  free.
- DELETE works on a full disk (it is how space is freed), for jobs and uploads.
- Uploads and conversions meet the free-space guard: 507, like the other writes.
- No error text carries a path of the server.
"""

from __future__ import annotations

import io
import time

import numpy as np
import soundfile as sf

from tests.server.conftest import fill
from tests.server.local import LocalClient
from tunesmith.server import create_app


def _statuses(client, ids):
    return [client.get(f"/v1/generations/{i}").json()["status"] for i in ids]


def test_queued_jobs_wait_out_a_full_disk_and_run_once_space_returns(
    tiny_model, tmpfs, submit, wait_job, worker_of
):
    """Was: the worker kept taking jobs while /readyz said 503, and every queued job ended
    failed for good."""
    with LocalClient(create_app(tiny_model, tmpfs / "data", min_free_bytes=2**20)) as client:
        worker = worker_of(client)
        worker.pause()
        ids = [submit(client, f"tune {i}", 0.3, seed=i) for i in range(4)]  # 4 batches
        filler = fill(tmpfs)
        ready = client.get("/readyz")
        assert ready.status_code == 503 and "MiB free" in ready.json()["detail"]
        worker.resume()
        time.sleep(1.0)  # the worker had taken and failed all four well within this
        assert _statuses(client, ids) == ["queued"] * 4
        filler.unlink()
        assert [wait_job(client, i)["status"] for i in ids] == ["done"] * 4
        assert client.get("/readyz").status_code == 200


def test_a_job_whose_file_does_not_fit_waits_for_the_room(tiny_model, tmpfs, submit, wait_job):
    """Was: the job failed with `writing the audio failed: cannot write '/.../x.wav'`."""
    with LocalClient(create_app(tiny_model, tmpfs / "data", min_free_bytes=0)) as client:
        filler = fill(tmpfs, leave=48 * 1024)  # room for the row, not for 64 kB of WAV
        job_id = submit(client, "too big", 2.0, seed=3)
        deadline = time.monotonic() + 20
        while "full" not in client.get("/readyz").json().get("detail", ""):
            assert time.monotonic() < deadline, client.get(f"/v1/generations/{job_id}").json()
            time.sleep(0.05)
        job = client.get(f"/v1/generations/{job_id}").json()
        assert job["status"] == "queued" and job["error"] is None, job
        filler.unlink()
        done = wait_job(client, job_id)
        assert done["status"] == "done" and done["audio_seconds"] == 2.0


def test_delete_works_on_a_full_disk(tiny_model, tmpfs, submit, wait_job, worker_of):
    """Was: 500 (SQLite's `database or disk is full` in the delete), though DELETE is the
    API's one way to free space."""
    with LocalClient(create_app(tiny_model, tmpfs / "data", min_free_bytes=0)) as client:
        done = wait_job(client, submit(client, "kept", 0.5))
        worker_of(client).pause()
        cancelled = [submit(client, f"dropped {i}") for i in range(2)]
        for job_id in cancelled:
            assert client.delete(f"/v1/generations/{job_id}").status_code == 200
        upload = client.post("/v1/uploads", content=_flac(0.5)).json()["id"]
        fill(tmpfs)
        for job_id in [*cancelled, done["id"]]:  # the cancelled ones free no file of their own
            response = client.delete(f"/v1/generations/{job_id}")
            assert response.status_code == 204, response.text
            assert client.get(f"/v1/generations/{job_id}").status_code == 404
        assert client.delete(f"/v1/uploads/{upload}").status_code == 204
        assert client.get(f"/v1/uploads/{upload}").status_code == 404


def test_uploads_meet_the_free_space_guard(tiny_model, tmpfs):
    """Was: uploads answered 201 while generations got 507, until 56 KiB were left."""
    with LocalClient(create_app(tiny_model, tmpfs / "data", min_free_bytes=2**20)) as client:
        assert client.post("/v1/uploads", content=_flac(0.5)).status_code == 201
        fill(tmpfs, leave=2**20 - 4096)
        response = client.post("/v1/uploads", content=_flac(0.5))
        assert response.status_code == 507 and "MiB free" in response.json()["detail"]
    with LocalClient(create_app(tiny_model, tmpfs / "data2", min_free_bytes=0)) as client:
        fill(tmpfs)
        response = client.post("/v1/uploads", content=_flac(3.0))  # no room for the body
        assert response.status_code == 507 and "disk is full" in response.json()["detail"]
        assert not [p for p in (tmpfs / "data2" / "uploads").iterdir()]  # nothing half-kept


def test_a_conversion_on_a_full_disk_is_507(tiny_model, tmpfs, submit, wait_job):
    """Was: 422 ("problem with initialization of the flac decoder")."""
    with LocalClient(create_app(tiny_model, tmpfs / "data", min_free_bytes=0)) as client:
        job = wait_job(client, submit(client, "convert me", 1.0))
        assert client.get(f"{job['audio_url']}?format=flac").status_code == 200
        fill(tmpfs)
        response = client.get(f"{job['audio_url']}?format=flac")
        assert response.status_code == 507, response.text
        assert "disk is full" in response.json()["detail"]
        assert client.get(job["audio_url"]).status_code == 200  # its own file still comes


def test_no_error_text_carries_a_path(tiny_model, tmp_path, submit, wait_job):
    """Was: `writing the audio failed: cannot write '/.../audio/9f2b...wav': ...` and
    `cannot read audio file '/.../uploads/083b...'` in jobs' errors."""
    data = tmp_path / "data"
    with LocalClient(create_app(tiny_model, data)) as client:
        (data / "audio").rmdir()
        (data / "audio").write_text("a file where the audio folder was")
        failed = wait_job(client, submit(client, "doomed"))
        assert failed["status"] == "failed" and "audio" in failed["error"], failed
        (data / "audio").unlink()
        (data / "audio").mkdir()
        upload = client.post("/v1/uploads", content=_flac(1.0)).json()["id"]
        client.app.state.tunesmith.worker.pause()  # type: ignore[attr-defined]
        job_id = submit(client, "continued", audio_prompt=upload)
        (data / "uploads" / upload).unlink()  # gone behind the server's back
        client.app.state.tunesmith.worker.resume()  # type: ignore[attr-defined]
        lost = wait_job(client, job_id)
        assert lost["status"] == "failed" and "cannot read audio file" in lost["error"]
        listing = client.get("/v1/generations").text
        for text in (failed["error"], lost["error"], listing):
            assert str(tmp_path) not in text and "/data/" not in text, text


def _flac(seconds: float) -> bytes:
    t = np.arange(int(seconds * 16000)) / 16000
    buffer = io.BytesIO()
    sf.write(buffer, 0.3 * np.sin(2 * np.pi * 440 * t) * np.random.default_rng(0).random(t.size),
             16000, format="FLAC")  # fmt: skip
    return buffer.getvalue()

"""Every endpoint on its happy path (and its 404/409), with the tiny random model."""

from __future__ import annotations

import io
import struct
import threading

import numpy as np
import pytest
import soundfile as sf
import torch

from tunesmith.server import audiofiles


def test_healthz_reports_model_limits_and_formats(client):
    health = client.get("/healthz").json()
    assert health["status"] == "ok"
    assert health["sample_rate"] == 32000 and health["window_seconds"] == 30.0
    assert health["max_duration"] == 3600.0 and health["melody"] is False
    assert "wav" in health["formats"] and health["auth_required"] is False
    assert health["queue"] == {"queued": 0, "running": 0, "max_queue": 16, "max_batch": 4}


def test_docs_page_and_static_files_are_served(client):
    assert "swagger" in client.get("/docs").text.lower()
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/v1/generations", "/v1/generations/{job_id}/audio", "/healthz"} <= set(paths)
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'id="prompt"' in page.text
    for name in ("app.js", "style.css"):
        assert client.get(f"/static/{name}").status_code == 200


def test_generate_poll_and_download_wav(client, submit, wait_job):
    response = client.post("/v1/generations", json={"prompt": "lofi beat", "duration": 0.3})
    assert response.status_code == 202
    job_id = response.json()["id"]
    assert response.headers["location"] == f"/v1/generations/{job_id}"
    assert response.json()["status"] in ("queued", "running")
    job = wait_job(client, job_id)
    assert job["status"] == "done", job
    assert job["progress"]["steps_done"] == job["progress"]["steps_total"] > 0
    assert job["batch_size"] == 1 and job["error"] is None
    assert job["audio_seconds"] == pytest.approx(0.3)
    assert job["timings"]["run_seconds"] >= 0 and job["timings"]["finished_at"]
    assert job["parameters"]["top_k"] == 250 and job["parameters"]["seed"] is None
    audio = client.get(job["audio_url"])
    assert audio.headers["content-type"] == "audio/wav"
    assert 'filename="lofi-beat-' in audio.headers["content-disposition"]
    data, rate = sf.read(io.BytesIO(audio.content))
    assert rate == 32000 and data.shape == (9600,)


@pytest.mark.parametrize("fmt", ["flac", "mp3", "ogg"])
def test_other_formats_have_their_media_type(client, submit, wait_job, fmt):
    if fmt not in audiofiles.available_formats():
        pytest.skip(f"this libsndfile cannot write {fmt}")
    job = wait_job(client, submit(client, format=fmt))
    assert job["status"] == "done" and job["media_type"] == audiofiles.MEDIA_TYPES[fmt]
    audio = client.get(job["audio_url"])
    assert audio.headers["content-type"] == audiofiles.MEDIA_TYPES[fmt]
    info = sf.info(io.BytesIO(audio.content))
    assert info.format == audiofiles.SOUNDFILE_FORMATS[fmt] and info.samplerate == 32000


def test_seed_reproduces_the_library_result(client, submit, wait_job, tiny_model):
    """Unlevelled (normalize none), the file is the library's audio to 16-bit rounding."""
    jobs = [
        wait_job(client, submit(client, "seeded", 0.4, seed=7, normalize="none")) for _ in range(2)
    ]
    first, second = (client.get(j["audio_url"]).content for j in jobs)
    assert first == second
    expected = tiny_model.generate("seeded", 0.4, seed=7)[0, 0].numpy()
    data, _ = sf.read(io.BytesIO(first), dtype="float32")
    assert np.abs(data - expected).max() < 2 / 32767  # 16-bit rounding only


def test_list_is_newest_first_with_paging_and_filter(client, submit, wait_job):
    ids = [submit(client, f"tune {i}", 0.2) for i in range(3)]
    for job_id in ids:
        wait_job(client, job_id)
    page = client.get("/v1/generations", params={"limit": 2}).json()
    assert page["total"] == 3 and [j["id"] for j in page["items"]] == ids[::-1][:2]
    rest = client.get("/v1/generations", params={"limit": 2, "offset": 2}).json()
    assert [j["id"] for j in rest["items"]] == ids[:1]
    assert client.get("/v1/generations", params={"status": "failed"}).json()["total"] == 0


def test_stream_sends_wav_while_the_job_runs(client, submit, wait_job, worker_of):
    worker_of(client).pause()
    job_id = submit(client, "streamed", 0.5, normalize="none")  # the stream is not levelled
    with client.stream("GET", f"/v1/generations/{job_id}/stream") as stream:
        assert stream.headers["content-type"] == "audio/wav"
        worker_of(client).resume()
        body = b"".join(stream.iter_bytes())
    assert body[:4] == b"RIFF" and body[8:16] == b"WAVEfmt "
    assert struct.unpack("<I", body[40:44])[0] == audiofiles.STREAM_UNKNOWN_SIZE
    pcm = np.frombuffer(body[44:], dtype="<i2")
    assert pcm.shape == (16000,)
    job = wait_job(client, job_id)
    stored, _ = sf.read(io.BytesIO(client.get(job["audio_url"]).content), dtype="int16")
    assert np.abs(pcm.astype(int) - stored.astype(int)).max() <= 1


def test_stream_of_a_finished_job_is_its_file(client, submit, wait_job):
    job = wait_job(client, submit(client, format="flac"))
    stream = client.get(job["stream_url"])
    assert stream.headers["content-type"] == "audio/flac"
    assert stream.content == client.get(job["audio_url"]).content


def test_peaks_describe_the_audio(client, submit, wait_job):
    job = wait_job(client, submit(client))
    peaks = client.get(f"/v1/generations/{job['id']}/peaks").json()["peaks"]
    assert len(peaks) == audiofiles.PEAK_COUNT and all(0 <= p <= 1 for p in peaks)
    assert max(peaks) > 0


def test_audio_and_peaks_of_an_unfinished_job_are_409(client, submit, worker_of):
    worker_of(client).pause()
    job_id = submit(client)
    for tail in ("audio", "peaks"):
        response = client.get(f"/v1/generations/{job_id}/{tail}")
        assert response.status_code == 409 and "queued" in response.json()["detail"]


@pytest.mark.parametrize("method,tail", [("GET", ""), ("GET", "/audio"), ("GET", "/stream"),
                                         ("GET", "/peaks"), ("DELETE", "")])  # fmt: skip
def test_unknown_ids_are_404(client, method, tail):
    response = client.request(method, f"/v1/generations/nope{tail}")
    assert response.status_code == 404 and "nope" in response.json()["detail"]


def test_delete_removes_a_finished_job_and_its_file(client, submit, wait_job):
    job = wait_job(client, submit(client))
    audio_dir = client.app.state.tunesmith.store.audio_dir
    assert len(list(audio_dir.iterdir())) == 1
    assert client.delete(f"/v1/generations/{job['id']}").status_code == 204
    assert client.get(f"/v1/generations/{job['id']}").status_code == 404
    assert list(audio_dir.iterdir()) == []


def test_peaks_helper_handles_short_and_silent_audio():
    assert audiofiles.peaks(torch.zeros(1, 3), count=8) == [0.0] * 8
    assert audiofiles.peaks(torch.zeros(2, 0), count=4) == [0.0] * 4
    assert max(audiofiles.peaks(torch.full((1, 1000), -0.5), count=10)) == 0.5


def test_stream_chunks_arrive_before_the_job_ends(client, submit, wait_job, worker_of):
    worker = worker_of(client)
    release = threading.Event()

    def hold_late_steps(ids: list[str]) -> None:
        done, _ = worker.progress(ids[0]) or (0, 0)
        if done >= 90:  # past the first 1 s chunk (50 frames + lookahead + delays)
            assert release.wait(10)

    worker.step_hook = hold_late_steps
    job_id = submit(client, "long", 2.5)
    with client.stream("GET", f"/v1/generations/{job_id}/stream") as stream:
        pieces = stream.iter_bytes()
        got = b""
        while len(got) < 44 + 2 * 32000:  # the header and the first second
            got += next(pieces)
        assert client.get(f"/v1/generations/{job_id}").json()["status"] == "running"
        release.set()
        got += b"".join(pieces)
    assert len(got) == 44 + 2 * 80000
    assert wait_job(client, job_id)["status"] == "done"

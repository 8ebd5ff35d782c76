"""The whole engine over HTTP, with the CLI's checks: long pieces past the 30 s window,
continuation of an uploaded audio prompt, melody checkpoints with an uploaded melody, and
streaming of each."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf
from fastapi.testclient import TestClient

from tests.server.local import LocalClient
from tunesmith import MusicGen
from tunesmith.server import create_app


def _wav_bytes(seconds: float, rate: int = 44100, channels: int = 2, fmt: str = "WAV") -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    data = np.stack([0.3 * np.sin(2 * np.pi * 440 * t)] * channels, axis=1)
    buffer = io.BytesIO()
    sf.write(buffer, data, rate, format=fmt)
    return buffer.getvalue()


def _upload(client: TestClient, body: bytes) -> dict:
    response = client.post(
        "/v1/uploads", content=body, headers={"Content-Type": "application/octet-stream"}
    )
    assert response.status_code == 201, response.text
    return response.json()


def test_uploads_are_checked_and_described(client) -> None:
    info = _upload(client, _wav_bytes(1.5))
    assert info["seconds"] == pytest.approx(1.5) and info["channels"] == 2
    assert info["sample_rate"] == 44100
    assert client.get(f"/v1/uploads/{info['id']}").json() == info
    flac = _upload(client, _wav_bytes(0.5, fmt="FLAC"))
    assert flac["seconds"] == pytest.approx(0.5)
    bad = client.post("/v1/uploads", content=b"not audio at all")
    assert bad.status_code == 422 and "not audio" in bad.json()["detail"]
    assert client.post("/v1/uploads", content=b"").status_code == 422
    assert client.get("/v1/uploads/" + "0" * 32).status_code == 404


def test_an_upload_past_the_limit_is_413(tiny_model, tmp_path) -> None:
    with LocalClient(create_app(tiny_model, tmp_path, max_upload_bytes=10_000)) as client:
        response = client.post("/v1/uploads", content=_wav_bytes(1.0))
        assert response.status_code == 413


def test_continuation_of_an_uploaded_prompt(client, wait_job) -> None:
    prompt = _upload(client, _wav_bytes(1.0, rate=22050, channels=1))
    response = client.post(
        "/v1/generations",
        json={"prompt": "go on", "duration": 0.5, "audio_prompt": prompt["id"], "seed": 1},
    )
    assert response.status_code == 202, response.text
    job = wait_job(client, response.json()["id"])
    assert job["status"] == "done", job
    assert job["audio_seconds"] == pytest.approx(1.5, abs=0.03)  # the prompt, then 0.5 s more
    assert job["parameters"]["audio_prompt"] == prompt["id"]
    stream = client.get(job["stream_url"])  # a finished job's stream is its file
    assert stream.status_code == 200


def test_continuation_is_checked_like_the_cli(client) -> None:
    too_long = _upload(client, _wav_bytes(31.0, rate=8000, channels=1))
    response = client.post(
        "/v1/generations", json={"prompt": "x", "duration": 1.0, "audio_prompt": too_long["id"]}
    )
    assert response.status_code == 422 and "shorter than the model's 30s window" in response.text
    missing = client.post(
        "/v1/generations", json={"prompt": "x", "duration": 1.0, "audio_prompt": "a" * 32}
    )
    assert missing.status_code == 404
    melody = _upload(client, _wav_bytes(1.0))
    refused = client.post("/v1/generations", json={"prompt": "x", "melody": melody["id"]})
    assert refused.status_code == 422 and "text only" in refused.json()["detail"]


def test_a_piece_past_the_window(client, wait_job) -> None:
    response = client.post(
        "/v1/generations", json={"prompt": "long", "duration": 34.0, "stride": 15.0}
    )
    assert response.status_code == 202, response.text
    job = wait_job(client, response.json()["id"], timeout=120)
    assert job["status"] == "done" and job["audio_seconds"] == pytest.approx(34.0, abs=0.03)
    too_long = client.post("/v1/generations", json={"prompt": "x", "duration": 4000.0})
    assert too_long.status_code == 422


@pytest.fixture(scope="module")
def melody_model(tmp_path_factory: pytest.TempPathFactory) -> MusicGen:
    from tunesmith.testing.checkpoints import build_melody_model, save_checkpoint

    folder = save_checkpoint(build_melody_model(seed=7), tmp_path_factory.mktemp("melody"))
    return MusicGen.from_pretrained(folder, device="cpu")


def test_a_melody_job_on_a_melody_checkpoint(melody_model, tmp_path, wait_job) -> None:
    with LocalClient(create_app(melody_model, tmp_path)) as client:
        assert client.get("/healthz").json()["melody"] is True
        melody = _upload(client, _wav_bytes(2.0))
        response = client.post(
            "/v1/generations",
            json={"prompt": "hum", "duration": 1.0, "melody": melody["id"], "seed": 2},
        )
        assert response.status_code == 202, response.text
        job = wait_job(client, response.json()["id"])
        assert job["status"] == "done" and job["audio_seconds"] == pytest.approx(1.0, abs=0.03)
        audio = client.get(job["audio_url"])
        assert audio.status_code == 200 and len(audio.content) > 1000


def test_stereo_checkpoints_serve_two_channels(tmp_path, wait_job) -> None:
    from tunesmith.testing.checkpoints import build_family_model, save_checkpoint

    folder = save_checkpoint(build_family_model("stereo", seed=1), tmp_path / "stereo")
    model = MusicGen.from_pretrained(folder, device="cpu")
    with LocalClient(create_app(model, tmp_path / "data")) as client:
        assert client.get("/healthz").json()["audio_channels"] == 2
        job = client.post("/v1/generations", json={"prompt": "wide", "duration": 0.5}).json()
        job = wait_job(client, job["id"])
        data, _ = sf.read(io.BytesIO(client.get(job["audio_url"]).content))
        assert data.shape[1] == 2


def test_a_finished_job_has_a_spectrogram(client, submit, wait_job) -> None:
    job = wait_job(client, submit(client, "picture", 0.5))
    response = client.get(f"/v1/generations/{job['id']}/spectrogram")
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    assert response.content.startswith(b"\x89PNG")


def test_a_continuation_streams_live(client, worker_of, wait_job) -> None:
    """Streaming works for every kind of job: here a continuation, its prompt first."""
    prompt = _upload(client, _wav_bytes(1.0, rate=32000, channels=1))
    worker_of(client).pause()
    job_id = client.post(
        "/v1/generations", json={"prompt": "on", "duration": 0.5, "audio_prompt": prompt["id"]}
    ).json()["id"]
    with client.stream("GET", f"/v1/generations/{job_id}/stream") as stream:
        worker_of(client).resume()
        body = b"".join(stream.iter_bytes())
    samples = (len(body) - 44) // 2
    assert samples == pytest.approx(48000, abs=700)  # 1 s of prompt, then 0.5 s
    assert wait_job(client, job_id)["status"] == "done"


def test_a_draining_server_refuses_new_jobs_with_503(tiny_model, tmp_path) -> None:
    with LocalClient(create_app(tiny_model, tmp_path, drain_seconds=0)) as client:
        client.app.state.tunesmith.worker.stop()  # type: ignore[attr-defined]  # as SIGTERM does
        response = client.post("/v1/generations", json={"prompt": "late", "duration": 0.3})
        assert response.status_code == 503 and "stopping" in response.json()["detail"]
        assert response.headers["Retry-After"]
        assert client.get("/readyz").status_code == 503


def test_the_document_declares_security_only_with_a_key(tiny_model, tmp_path) -> None:
    """Was: security declared when no key was set; the 400 for a body that is not JSON (or
    not UTF-8) undocumented; the duration limit missing; /stream's other media types."""
    with LocalClient(create_app(tiny_model, tmp_path / "open")) as client:
        document = client.get("/openapi.json").json()
        assert "securitySchemes" not in document.get("components", {})
        post = document["paths"]["/v1/generations"]["post"]
        assert "security" not in post and "401" not in post["responses"]
        assert "400" in post["responses"]
        duration = document["components"]["schemas"]["GenerationRequest"]["properties"]["duration"]
        assert duration["maximum"] == 3600.0
        stream = document["paths"]["/v1/generations/{job_id}/stream"]["get"]["responses"]["200"]
        assert {"audio/wav", "audio/flac", "audio/mpeg", "audio/ogg"} <= set(stream["content"])
        bad = client.post(
            "/v1/generations", content=b'{"prompt": "\xff"}',
            headers={"Content-Type": "application/json"},
        )  # fmt: skip
        assert bad.status_code in (400, 422) and bad.json()["detail"]
    with LocalClient(create_app(tiny_model, tmp_path / "keyed", api_key="k")) as client:
        document = client.get("/openapi.json").json()
        assert document["components"]["securitySchemes"]
        assert "401" in document["paths"]["/v1/generations"]["post"]["responses"]

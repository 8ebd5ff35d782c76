"""Operations: Prometheus metrics, request ids, JSON logs, the docs' files served locally."""

from __future__ import annotations

import json
import logging

from tunesmith.server.operations import JsonFormatter


def test_metrics_in_prometheus_format(client, submit, wait_job):
    wait_job(client, submit(client, "counted"))
    response = client.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert 'tunesmith_jobs{status="done"} 1.0' in text
    assert 'tunesmith_queue_depth{state="queued"} 0.0' in text
    assert "tunesmith_decoder_steps_total" in text and "tunesmith_generation_seconds_total" in text
    rate = next(
        line for line in text.splitlines() if line.startswith("tunesmith_decoder_steps_per_second")
    )
    assert float(rate.split()[-1]) > 0
    assert "tunesmith_ready 1.0" in text


def test_request_ids_are_echoed_or_made(client, caplog):
    with caplog.at_level(logging.INFO, logger="tunesmith.server.access"):
        given = client.get("/healthz", headers={"X-Request-ID": "abc-123"})
        made = client.get("/healthz")
        bad = client.get("/healthz", headers={"X-Request-ID": "no spaces\tallowed"})
    assert given.headers["x-request-id"] == "abc-123"
    assert len(made.headers["x-request-id"]) == 32
    assert bad.headers["x-request-id"] != "no spaces\tallowed"
    logged = [r for r in caplog.records if getattr(r, "request_id", None) == "abc-123"]
    assert logged and "GET /healthz 200" in logged[0].getMessage()


def test_json_log_lines() -> None:
    record = logging.LogRecord(
        "tunesmith.server", logging.INFO, __file__, 1, "hello %s", ("x",), None
    )
    record.request_id = "r1"
    line = json.loads(JsonFormatter().format(record))
    assert line["message"] == "hello x" and line["level"] == "info" and line["request_id"] == "r1"


def test_docs_use_only_local_files(client):
    html = client.get("/docs").text
    assert "/docs-assets/swagger-ui-bundle.js" in html and "cdn" not in html.lower()
    assert client.get("/docs-assets/swagger-ui-bundle.js").status_code == 200


def test_a_finished_job_downloads_in_another_format(client, submit, wait_job):
    """Was: ?format=mp3 was ignored (the job's own format came back)."""
    import io

    import soundfile as sf

    job = wait_job(client, submit(client, "convert me", 0.5))
    for fmt, media in (("flac", "audio/flac"), ("ogg", "audio/ogg"), ("wav", "audio/wav")):
        response = client.get(f"{job['audio_url']}?format={fmt}")
        assert response.status_code == 200 and response.headers["content-type"] == media
        assert response.headers["content-disposition"].endswith(f'.{fmt}"')
        data, rate = sf.read(io.BytesIO(response.content))
        assert rate == 32000 and abs(len(data) - 16000) < 2000
    assert client.get(f"{job['audio_url']}?format=aiff").status_code == 422
    audio_dir = client.app.state.tunesmith.store.audio_dir  # type: ignore[attr-defined]
    assert not [p for p in audio_dir.iterdir() if p.name.startswith(".tunesmith-convert")]


def test_idempotency_key_returns_the_same_job(client, worker_of):
    worker_of(client).pause()
    body = {"prompt": "once", "duration": 0.3}
    first = client.post("/v1/generations", json=body, headers={"Idempotency-Key": "k-1"})
    again = client.post("/v1/generations", json=body, headers={"Idempotency-Key": "k-1"})
    assert first.status_code == again.status_code == 202
    assert first.json()["id"] == again.json()["id"]
    other = client.post("/v1/generations", json=body, headers={"Idempotency-Key": "k-2"})
    assert other.json()["id"] != first.json()["id"]
    changed = client.post(
        "/v1/generations", json={**body, "prompt": "twice"}, headers={"Idempotency-Key": "k-1"}
    )
    assert changed.status_code == 409 and "another request body" in changed.json()["detail"]
    assert client.get("/healthz").json()["queue"]["queued"] == 2
    worker_of(client).resume()


def test_failed_authentication_gets_slower(make_client):
    """Each failure from a client is held longer than the last (lower bounds: a busy machine
    only adds to them); the right key is not held."""
    import time

    client = make_client(api_key="right", auth_delay_step=0.05)
    for failures in range(1, 5):
        began = time.monotonic()
        assert client.get("/v1/generations", headers={"X-API-Key": "wrong"}).status_code == 401
        assert time.monotonic() - began >= 0.05 * failures
    began = time.monotonic()
    assert client.get("/v1/generations", headers={"X-API-Key": "right"}).status_code == 200
    assert time.monotonic() - began < 0.5


def test_retention_removes_the_oldest_finished_jobs(make_client, submit, wait_job):
    # A 0.3 s WAV is 19.2 kB: room for one, not two.
    client = make_client(max_disk_bytes=30_000)
    first = wait_job(client, submit(client, "old", 0.3))
    assert first["status"] == "done"
    second = wait_job(client, submit(client, "new", 0.3))
    assert second["status"] == "done"
    assert client.get(f"/v1/generations/{first['id']}").status_code == 404
    assert client.get(f"/v1/generations/{second['id']}").status_code == 200


def test_retention_by_age(tiny_model, tmp_path, submit, wait_job):
    from tests.server.local import LocalClient
    from tunesmith.server import create_app

    data = tmp_path / "data"
    with LocalClient(create_app(tiny_model, data)) as client:
        old = wait_job(client, submit(client, "old", 0.3))
    import time

    with LocalClient(create_app(tiny_model, data, keep_days=1e-9)) as client:  # ~0.1 ms
        assert client.post("/v1/generations", json={"prompt": "new", "duration": 0.3}).is_success
        deadline = time.monotonic() + 20  # retention runs after the batch
        while client.get(f"/v1/generations/{old['id']}").status_code != 404:
            assert time.monotonic() < deadline
            time.sleep(0.05)

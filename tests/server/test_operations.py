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

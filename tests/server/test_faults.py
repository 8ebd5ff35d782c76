"""The service under faults: each defect found by trying it as a tester would, reproduced and
held fixed (a full disk, offsets past SQLite's integers, simultaneous DELETEs, a tiny
temperature, a measured Retry-After, a stalled body, foreign Host headers, server paths)."""

from __future__ import annotations

import shutil
import sqlite3
import threading
import time

from tests.server.conftest import fill
from tests.server.local import LocalClient
from tunesmith.server import create_app
from tunesmith.server import worker as worker_module


def test_a_full_disk_never_kills_the_worker(tiny_model, tmpfs, submit, wait_job):
    """Was: the audio write failed, recording the failure raised `database or disk is full`
    inside the except handler, the worker thread died, and the server went on answering 202
    and /healthz ok while running nothing; a POST answered a plain-text 500."""
    data = tmpfs / "data"
    with LocalClient(create_app(tiny_model, data, min_free_bytes=0)) as client:
        first = wait_job(client, submit(client, "before"))
        assert first["status"] == "done"
        fill(tmpfs)
        response = client.post("/v1/generations", json={"prompt": "x", "duration": 0.3})
        if response.status_code != 202:
            assert response.status_code == 507, response.text
            assert response.headers["content-type"] == "application/json"
            assert "disk is full" in response.json()["detail"]
        (tmpfs / "filler").unlink()
        if response.status_code == 202:  # the insert found room in SQLite's pages: it waited
            assert wait_job(client, response.json()["id"])["status"] == "done"
        after = wait_job(client, submit(client, "after"))
        assert after["status"] == "done", after  # the worker still runs jobs
        assert client.get("/readyz").status_code == 200


def test_failures_the_store_refuses_are_held_and_shown(
    tiny_model, tmp_path, submit, wait_job, monkeypatch
):
    """The same with an injected write error: the audio write fails, then the store refuses
    to record the failure; the job still reads as failed, and is recorded once it can be."""
    with LocalClient(create_app(tiny_model, tmp_path / "data")) as client:
        store = client.app.state.tunesmith.store  # type: ignore[attr-defined]
        real_finish = store.mark_finished
        refusals = {"n": 0}

        def full(*args, **kwargs):
            if refusals["n"] < 2:
                refusals["n"] += 1
                raise sqlite3.OperationalError("database or disk is full")
            return real_finish(*args, **kwargs)

        def broken(*args, **kwargs):
            raise OSError(5, "Input/output error")  # not a full disk: the job fails

        monkeypatch.setattr(store, "mark_finished", full)
        monkeypatch.setattr(worker_module, "write_result", broken)
        job = wait_job(client, submit(client, "doomed"))
        assert job["status"] == "failed" and "Input/output error" in job["error"]
        monkeypatch.undo()
        ok = wait_job(client, submit(client, "fine"))
        assert ok["status"] == "done"
        deadline = time.monotonic() + 10
        while store.get(job["id"]).status != "failed":  # written once the store took it
            assert time.monotonic() < deadline
            time.sleep(0.05)


def test_readyz_and_post_refuse_below_the_free_space_floor(tiny_model, tmp_path):
    free = shutil.disk_usage(tmp_path).free
    with LocalClient(create_app(tiny_model, tmp_path, min_free_bytes=free * 2)) as client:
        ready = client.get("/readyz")
        assert ready.status_code == 503 and "MiB free" in ready.json()["detail"]
        response = client.post("/v1/generations", json={"prompt": "x", "duration": 0.3})
        assert response.status_code == 507 and "MiB free" in response.json()["detail"]
        health = client.get("/healthz")
        assert health.status_code == 200 and health.json()["ready"] is False  # alive, not ready
    with LocalClient(create_app(tiny_model, tmp_path / "ok")) as client:
        assert client.get("/readyz").json() == {"status": "ready"}


def test_an_offset_past_sqlite_integers_is_a_422(client):
    """Was: ?offset=9223372036854775808 answered 500 (OverflowError from sqlite)."""
    for offset in ("9223372036854775808", "99999999999999999999999"):
        response = client.get(f"/v1/generations?offset={offset}")
        assert response.status_code == 422 and "offset" in response.json()["detail"]


def test_simultaneous_deletes_of_a_running_job(client, submit, worker_of, wait_job, wait_running):
    """Was: eight DELETEs at once deleted the row while the worker still ran the job, and
    several callers were told 204."""
    worker = worker_of(client)
    gate = threading.Event()
    worker.step_hook = lambda ids: gate.wait(5)
    job_id = submit(client, "long", 10.0)
    wait_running(client, job_id)
    codes: list[int] = []
    threads = [
        threading.Thread(
            target=lambda: codes.append(client.delete(f"/v1/generations/{job_id}").status_code)
        )
        for _ in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert codes.count(200) == 1, codes  # one caller cancelled it
    assert set(codes) <= {200, 204, 409}, codes
    assert codes.count(204) <= 1, codes
    if 204 not in codes:  # the row outlived the batch: it is there, cancelled
        gate.set()
        assert wait_job(client, job_id)["status"] == "cancelled"
    gate.set()
    deadline = time.monotonic() + 10
    while (response := client.delete(f"/v1/generations/{job_id}")).status_code == 409:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert response.status_code in (204, 404)
    assert client.get(f"/v1/generations/{job_id}").status_code == 404


def test_a_tiny_temperature_makes_a_job_not_a_failure(client, submit, wait_job):
    """Was: {"temperature": 1e-45} was accepted (202), then the job failed in torch."""
    job = wait_job(client, submit(client, "cold", temperature=1e-45))
    assert job["status"] == "done", job


def test_retry_after_follows_the_measured_rate(make_client, submit, wait_job, worker_of):
    """Was: a fixed guess (36-50 s where the queue drained in 1.5 s)."""
    client = make_client(max_queue=1)
    assert wait_job(client, submit(client, "warm", 1.0))["status"] == "done"  # measures a rate
    worker = worker_of(client)
    rate = worker.steps_per_second
    assert rate and rate > 0
    worker.pause()
    submit(client, "queued", 1.0)
    response = client.post("/v1/generations", json={"prompt": "more", "duration": 1.0})
    assert response.status_code == 429
    expected = (50 + 4) / rate  # one queued second of audio ahead, at the measured rate
    assert int(response.headers["Retry-After"]) <= max(1, round(expected) + 1), (
        response.headers["Retry-After"],
        expected,
    )
    worker.resume()


def test_a_body_that_never_arrives_is_timed_out(tiny_model, tmp_path):
    """Was: a request whose body never came held its connection forever."""
    import asyncio

    app = create_app(tiny_model, tmp_path, body_timeout=0.2)
    sent: list[dict] = []

    async def receive() -> dict:
        await asyncio.sleep(3600)  # the body never comes
        return {}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": "http", "method": "POST", "path": "/v1/generations",
        "raw_path": b"/v1/generations", "query_string": b"", "root_path": "",
        "headers": [(b"host", b"127.0.0.1"), (b"content-type", b"application/json"),
                    (b"content-length", b"20")],
        "http_version": "1.1", "scheme": "http",
        "server": ("127.0.0.1", 8000), "client": ("127.0.0.1", 5000),
    }  # fmt: skip
    began = time.monotonic()
    asyncio.run(asyncio.wait_for(app(scope, receive, send), 5))
    assert sent[0]["status"] == 408 and time.monotonic() - began < 2


def test_foreign_host_headers_are_refused_without_a_key(tiny_model, tmp_path):
    """Was: a request with a foreign Host was served (DNS rebinding reaches a key-less
    loopback server)."""
    with LocalClient(create_app(tiny_model, tmp_path)) as client:
        assert client.get("/healthz", headers={"Host": "evil.example:8000"}).status_code == 421
        assert client.get("/healthz", headers={"Host": "127.0.0.1:8000"}).status_code == 200
        assert client.get("/healthz", headers={"Host": "localhost"}).status_code == 200
    with LocalClient(create_app(tiny_model, tmp_path / "k", api_key="k")) as client:
        headers = {"Host": "music.example.org", "X-API-Key": "k"}
        assert client.get("/healthz", headers=headers).status_code == 200  # a key guards it


def test_no_server_paths_in_answers(tiny_model, tiny_checkpoint, tmp_path, submit, wait_job):
    """Was: error messages and the unauthenticated /healthz showed absolute server paths."""
    with LocalClient(create_app(tiny_model, tmp_path / "data")) as client:
        health = client.get("/healthz").text
        assert str(tiny_checkpoint) not in health and str(tmp_path) not in health
        job = wait_job(client, submit(client))
        for path in (tmp_path / "data" / "audio").iterdir():
            path.unlink()
        missing = client.get(job["audio_url"]).text
        assert str(tmp_path) not in missing

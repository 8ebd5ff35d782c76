"""Uploads: decoded whole when they arrive, their key checked before their body is read,
deletable, kept by retention like jobs."""

from __future__ import annotations

import asyncio
import io
import time

import numpy as np
import soundfile as sf

from tests.server.local import LocalClient
from tunesmith.server import create_app


def _audio(seconds: float, fmt: str = "FLAC", rate: int = 16000) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    buffer = io.BytesIO()
    sf.write(buffer, 0.3 * np.sin(2 * np.pi * 440 * t), rate, format=fmt)
    return buffer.getvalue()


def _corrupted_flac() -> bytes:
    """A FLAC whose header reads (soundfile.info says 2 s) and whose frames do not."""
    data = bytearray(_audio(2.0))
    for i in range(2000, len(data), 7):
        data[i] ^= 0x5A
    return bytes(data)


def test_an_upload_that_does_not_decode_whole_is_refused_at_once(client):
    """Was: 201 {"seconds": 2.0}, and the job that used it failed later."""
    body = _corrupted_flac()
    assert sf.info(io.BytesIO(body)).duration == 2.0  # the header alone looks fine
    response = client.post("/v1/uploads", content=body)
    assert response.status_code == 422 and "can decode" in response.json()["detail"]
    assert list(client.app.state.tunesmith.store.upload_dir.iterdir()) == []  # type: ignore[attr-defined]


def test_uploads_can_be_deleted_unless_a_live_job_uses_them(client, submit, worker_of):
    """Was: no way to delete an upload."""
    upload = client.post("/v1/uploads", content=_audio(1.0)).json()["id"]
    worker_of(client).pause()
    job_id = submit(client, "continued", audio_prompt=upload)
    response = client.delete(f"/v1/uploads/{upload}")
    assert response.status_code == 409 and "used by" in response.json()["detail"]
    client.delete(f"/v1/generations/{job_id}")  # cancelled: no longer uses it
    assert client.delete(f"/v1/uploads/{upload}").status_code == 204
    assert client.get(f"/v1/uploads/{upload}").status_code == 404
    assert client.delete(f"/v1/uploads/{upload}").status_code == 404
    assert list(client.app.state.tunesmith.store.upload_dir.iterdir()) == []  # type: ignore[attr-defined]
    refused = client.post("/v1/generations", json={"prompt": "x", "audio_prompt": upload})
    assert refused.status_code == 404


def test_retention_removes_old_uploads_too(make_client, submit, wait_job, worker_of):
    client = make_client(keep_days=1.5 / 86400)  # 1.5 s
    old = client.post("/v1/uploads", content=_audio(0.5)).json()["id"]
    used = client.post("/v1/uploads", content=_audio(0.5)).json()["id"]
    worker = worker_of(client)
    worker.pause()
    waiting = submit(client, "continued", audio_prompt=used)
    time.sleep(1.6)
    worker.resume()  # retention runs after each batch
    assert wait_job(client, waiting)["status"] == "done"
    deadline = time.monotonic() + 10
    while client.get(f"/v1/uploads/{old}").status_code != 404:
        assert time.monotonic() < deadline, "the old upload was kept"
        time.sleep(0.05)


def test_retention_by_size_counts_uploads(make_client):
    client = make_client(max_disk_bytes=60_000)
    first = client.post("/v1/uploads", content=_audio(1.0, "WAV")).json()["id"]  # 32 kB
    second = client.post("/v1/uploads", content=_audio(1.0, "WAV")).json()["id"]
    assert client.post("/v1/generations", json={"duration": 0.2}).status_code == 202
    deadline = time.monotonic() + 10
    while client.get(f"/v1/uploads/{first}").status_code != 404:
        assert time.monotonic() < deadline, "over the size limit, the oldest upload stayed"
        time.sleep(0.05)
    assert client.get(f"/v1/uploads/{second}").status_code == 200


def _call(
    app, method: str, path: str, headers: dict[str, str], chunks: list[bytes]
) -> tuple[int, int]:
    """Call the app directly (ASGI); (status, body chunks the app took)."""
    taken = 0
    sent: list[dict] = []

    async def receive() -> dict:
        nonlocal taken
        if taken < len(chunks):
            taken += 1
            return {
                "type": "http.request",
                "body": chunks[taken - 1],
                "more_body": taken < len(chunks),
            }
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": "http", "method": method, "path": path, "raw_path": path.encode(),
        "query_string": b"", "root_path": "", "http_version": "1.1", "scheme": "http",
        "headers": [(k.lower().encode(), v.encode()) for k, v in
                    {"host": "127.0.0.1:8000", **headers}.items()],
        "server": ("127.0.0.1", 8000), "client": ("127.0.0.1", 5000),
    }  # fmt: skip

    asyncio.run(asyncio.wait_for(app(scope, receive, send), 10))
    return sent[0]["status"], taken


def test_the_key_and_the_declared_length_come_before_the_body(tiny_model, tmp_path):
    """Was: eight 32 MiB uploads without a key were read whole (11-14 s, +380 MB) before
    their 401."""
    app = create_app(tiny_model, tmp_path / "a", api_key="k", auth_delay_step=0.0)
    chunks = [b"\0" * 65536] * 64  # 4 MiB, offered a chunk at a time
    status, taken = _call(app, "POST", "/v1/uploads", {"content-length": str(2**22)}, chunks)
    assert status == 401 and taken == 0, (status, taken)
    status, taken = _call(
        app, "POST", "/v1/uploads", {"x-api-key": "k", "content-length": str(2**30)}, chunks
    )
    assert status == 413 and taken == 0, (status, taken)
    status, taken = _call(app, "POST", "/v1/uploads", {"x-api-key": "k"}, [_audio(0.5)])
    assert status == 201 and taken == 1
    app.state.tunesmith.store.close()


def test_a_body_past_the_limit_without_a_length_is_413(tiny_model, tmp_path):
    with LocalClient(create_app(tiny_model, tmp_path, max_upload_bytes=100_000)) as client:

        def chunks():
            for _ in range(40):
                yield b"\0" * 10_000

        response = client.post("/v1/uploads", content=chunks())
        assert response.status_code == 413
        assert list((tmp_path / "uploads").iterdir()) == []

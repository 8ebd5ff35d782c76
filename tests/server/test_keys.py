"""Per-key isolation: several named keys (hashed at rest); each job and upload belongs to
the key that made it; a key lists, reads, streams and deletes only its own (another's id
answers 404, as if it did not exist); an admin key sees all; /metrics and /healthz details
need a key when keys are set, /readyz stays open."""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
import soundfile as sf

from tunesmith.errors import InvalidOptionError
from tunesmith.server.keys import KeyRing, add_key, digest, read_keys_file

ALICE, BOB, OPS = {"X-API-Key": "alice-key"}, {"X-API-Key": "bob-key"}, {"X-API-Key": "ops-key"}


@pytest.fixture
def keys_file(tmp_path):
    path = tmp_path / "keys"
    path.write_text(
        "# name role hash\n"
        f"alice user sha256:{digest('alice-key').hex()}\n"
        f"bob   user sha256:{digest('bob-key').hex()}   # Bob's laptop\n"
        f"ops admin sha256:{digest('ops-key').hex()}\n"
    )
    return path


@pytest.fixture
def shared(make_client, keys_file):
    return make_client(api_keys=KeyRing.of(None, keys_file))


def _job(client, headers, prompt="mine", **fields) -> str:
    response = client.post(
        "/v1/generations", json={"prompt": prompt, "duration": 0.2, **fields}, headers=headers
    )
    assert response.status_code == 202, response.text
    job_id: str = response.json()["id"]
    return job_id


def test_a_key_sees_only_its_own_jobs(shared, wait_job):
    mine, theirs = _job(shared, ALICE, "alice's"), _job(shared, BOB, "bob's")
    shared.headers.update(OPS)
    wait_job(shared, mine), wait_job(shared, theirs)
    shared.headers.clear()
    listing = shared.get("/v1/generations", headers=ALICE).json()
    assert [j["id"] for j in listing["items"]] == [mine] and listing["total"] == 1
    for tail in ("", "/audio", "/stream", "/peaks", "/spectrogram"):
        assert shared.get(f"/v1/generations/{theirs}{tail}", headers=ALICE).status_code == 404
        assert shared.get(f"/v1/generations/{mine}{tail}", headers=ALICE).status_code == 200
    missing = shared.get("/v1/generations/" + "f" * 32, headers=ALICE)
    other = shared.get(f"/v1/generations/{theirs}", headers=ALICE)
    assert other.json()["detail"].replace(theirs, "X") == missing.json()["detail"].replace(
        "f" * 32, "X"
    )  # another's job reads exactly as a missing one
    assert shared.delete(f"/v1/generations/{theirs}", headers=ALICE).status_code == 404
    assert shared.get(f"/v1/generations/{theirs}", headers=BOB).status_code == 200


def test_an_admin_key_sees_and_deletes_all(shared, wait_job):
    ids = {_job(shared, ALICE), _job(shared, BOB)}
    listing = shared.get("/v1/generations", headers=OPS).json()
    assert {j["id"] for j in listing["items"]} == ids
    shared.headers.update(OPS)
    for job_id in ids:
        wait_job(shared, job_id)
        assert shared.delete(f"/v1/generations/{job_id}").status_code == 204


def test_uploads_belong_to_their_key(shared):
    t = np.arange(8000) / 8000
    buffer = io.BytesIO()
    sf.write(buffer, 0.2 * np.sin(2 * np.pi * 220 * t), 8000, format="FLAC")
    upload = shared.post("/v1/uploads", content=buffer.getvalue(), headers=ALICE).json()["id"]
    assert shared.get(f"/v1/uploads/{upload}", headers=BOB).status_code == 404
    using = shared.post(
        "/v1/generations", json={"duration": 0.2, "audio_prompt": upload}, headers=BOB
    )
    assert using.status_code == 404 and "no upload" in using.json()["detail"]
    assert shared.delete(f"/v1/uploads/{upload}", headers=BOB).status_code == 404
    assert shared.get(f"/v1/uploads/{upload}", headers=OPS).status_code == 200
    assert _job(shared, ALICE, audio_prompt=upload)


def test_idempotency_keys_are_each_callers_own(shared):
    body = {"prompt": "same", "duration": 0.2}
    first = shared.post("/v1/generations", json=body, headers={**ALICE, "Idempotency-Key": "k"})
    other = shared.post("/v1/generations", json=body, headers={**BOB, "Idempotency-Key": "k"})
    again = shared.post("/v1/generations", json=body, headers={**ALICE, "Idempotency-Key": "k"})
    assert first.json()["id"] == again.json()["id"] != other.json()["id"]


def test_health_details_and_metrics_need_a_key_readyz_does_not(shared):
    bare = shared.get("/healthz").json()
    assert bare["status"] == "ok" and bare["auth_required"] is True
    assert bare["model"] is None and bare["queue"] is None and bare["max_duration"] is None
    full = shared.get("/healthz", headers=BOB).json()
    assert full["model"] and full["queue"]["max_queue"] == 16 and full["min_stride"] == 1.0
    assert shared.get("/healthz", headers={"X-API-Key": "wrong"}).status_code == 401
    assert shared.get("/metrics").status_code == 401
    assert shared.get("/metrics", headers=BOB).status_code == 200
    assert shared.get("/readyz").json() == {"status": "ready"}


def test_two_keys_at_once_must_be_the_same_key(shared):
    both = {**ALICE, "Authorization": "Bearer bob-key"}
    assert shared.get("/v1/generations", headers=both).status_code == 401
    same = {**ALICE, "Authorization": "Bearer alice-key"}
    assert shared.get("/v1/generations", headers=same).status_code == 200


def test_the_single_key_is_an_admin_beside_the_named_ones(make_client, keys_file):
    client = make_client(api_key="single", api_keys=KeyRing.of(None, keys_file))
    mine = _job(client, ALICE)
    assert client.get(f"/v1/generations/{mine}", headers={"X-API-Key": "single"}).status_code == 200


def test_keys_are_stored_hashed_and_added_with_a_command(tmp_path):
    path = tmp_path / "keys"
    key = add_key(path, "carol")
    admin = add_key(path, "dana", admin=True)
    text = path.read_text()
    assert key not in text and admin not in text and digest(key).hex() in text
    assert os.stat(path).st_mode & 0o077 == 0  # readable by its owner only
    ring = KeyRing(read_keys_file(path))
    assert ring.match(key).name == "carol" and not ring.match(key).admin
    assert ring.match(admin).admin and ring.match("nope") is None
    with pytest.raises(InvalidOptionError, match="already has"):
        add_key(path, "carol")


@pytest.mark.parametrize(
    "line,match",
    [("alice user s3cret", "sha256"), ("alice boss sha256:" + "0" * 64, "role"),
     ("al/ce user sha256:" + "0" * 64, "name"), ("alice user", "NAME ROLE"),
     ("# only a comment", "no key")],
)  # fmt: skip
def test_a_bad_keys_file_is_one_line_naming_the_line(tmp_path, line, match):
    path = tmp_path / "keys"
    path.write_text(line + "\n")
    with pytest.raises(InvalidOptionError, match=match):
        read_keys_file(path)

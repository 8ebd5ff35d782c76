"""Bad input is refused with a clear message (422, or 413 for an oversized body), never a 500,
and never reaches the queue."""

from __future__ import annotations

import pytest

from tunesmith.server import audiofiles

BAD_BODIES = [
    ({"prompt": "x" * 1001}, "prompt"),
    ({"prompt": 5}, "prompt"),
    ({"prompt": None}, "prompt"),
    ({"duration": 0}, "duration"),
    ({"duration": -1}, "duration"),
    ({"duration": 3600.5}, "duration"),  # past the long-form limit (30.5 s is long form)
    ({"stride": 31}, "stride"),
    ({"stride": 0.02}, "stride"),  # a window per frame: 178,000 windows for an hour
    ({"stride": 0.99}, "stride"),
    ({"audio_prompt": "../../etc/passwd"}, "audio_prompt"),
    ({"duration": "8"}, "duration"),
    ({"duration": True}, "duration"),
    ({"top_k": -1}, "top_k"),
    ({"top_k": 1.5}, "top_k"),
    ({"top_k": "5"}, "top_k"),
    ({"top_k": True}, "top_k"),
    ({"top_k": 10**30}, "top_k"),
    ({"top_p": -0.1}, "top_p"),
    ({"top_p": 1.01}, "top_p"),
    ({"temperature": 0}, "temperature"),
    ({"temperature": -1}, "temperature"),
    ({"cfg_scale": 1e300}, "cfg_scale"),
    ({"cfg_scale": -1}, "cfg_scale"),
    ({"seed": -1}, "seed"),
    ({"seed": 2**63}, "seed"),
    ({"seed": 1.5}, "seed"),
    ({"format": "aac"}, "format"),
    ({"format": "WAV"}, "format"),
    ({"colour": "blue"}, "colour"),
]


@pytest.mark.parametrize(
    "fields,field", BAD_BODIES, ids=[f"{f}-{i}" for i, (_, f) in enumerate(BAD_BODIES)]
)
def test_bad_fields_are_422_naming_the_field(client, fields, field):
    response = client.post("/v1/generations", json={"prompt": "ok", "duration": 0.2, **fields})
    assert response.status_code == 422, response.text
    assert response.json()["detail"].startswith(f"{field}:")
    assert client.get("/v1/generations").json()["total"] == 0


INVALID_BODIES = [  # JSON that is not a request: 422, naming what is wrong
    b'{"prompt": "x", "cfg_scale": NaN}',
    b'{"prompt": "x", "temperature": Infinity}',
    b'{"prompt": "x", "duration": -Infinity}',
    b"[1, 2, 3]",
    b'"just a string"',
    b"",
]
NOT_JSON = [b'{"prompt": "x",', b"\xff\xfe not utf-8", b"{'prompt': 'x'}"]


@pytest.mark.parametrize("raw", INVALID_BODIES)
def test_json_that_is_not_a_request_is_422(client, raw):
    response = client.post(
        "/v1/generations", content=raw, headers={"content-type": "application/json"}
    )
    assert response.status_code == 422, response.text
    assert response.json()["detail"]


@pytest.mark.parametrize("raw", NOT_JSON)
def test_a_body_that_is_not_json_is_400_as_documented(client, raw):
    """Was: 422, where the document says 400."""
    response = client.post(
        "/v1/generations", content=raw, headers={"content-type": "application/json"}
    )
    assert response.status_code == 400, response.text
    assert response.json()["detail"].startswith("the body is not valid JSON")
    documented = client.get("/openapi.json").json()["paths"]["/v1/generations"]["post"]
    assert "400" in documented["responses"]


def test_empty_prompt_means_unconditional_and_defaults_apply(client, wait_job):
    response = client.post("/v1/generations", json={"prompt": "", "duration": 0.2})
    assert response.status_code == 202
    job = wait_job(client, response.json()["id"])
    assert job["status"] == "done" and job["parameters"]["cfg_scale"] == 3.0
    assert client.post("/v1/generations", json={"duration": 0.2}).status_code == 202


def test_longest_prompt_and_whole_number_floats_are_accepted(client):
    body = {"prompt": "x" * 1000, "duration": 1, "temperature": 2, "top_p": 1, "cfg_scale": 0}
    assert client.post("/v1/generations", json=body).status_code == 202


def test_oversized_bodies_are_refused_before_parsing(client):
    big = b'{"prompt": "' + b"x" * 20_000 + b'"}'
    response = client.post(
        "/v1/generations", content=big, headers={"content-type": "application/json"}
    )
    assert response.status_code == 413 and "bytes" in response.json()["detail"]

    def chunks():  # no Content-Length: the limit still holds
        yield b'{"prompt": "'
        for _ in range(40):
            yield b"x" * 1000
        yield b'"}'

    response = client.post(
        "/v1/generations", content=chunks(), headers={"content-type": "application/json"}
    )
    assert response.status_code == 413


def test_mp3_is_refused_with_a_reason_where_libsndfile_lacks_it(client, monkeypatch):
    monkeypatch.setattr(audiofiles, "available_formats", lambda: ("wav", "flac", "ogg"))
    response = client.post("/v1/generations", json={"prompt": "x", "format": "mp3"})
    assert response.status_code == 422
    assert "libsndfile" in response.json()["detail"] and "1.1" in response.json()["detail"]


@pytest.mark.parametrize(
    "query", ["limit=0", "limit=101", "offset=-1", "limit=abc", "status=sleeping"]
)
def test_bad_list_queries_are_422(client, query):
    response = client.get(f"/v1/generations?{query}")
    assert response.status_code == 422 and response.json()["detail"].startswith("query.")


def test_a_tiny_stride_is_refused_by_the_api_and_the_cli_alike(
    client, tiny_checkpoint, tmp_path, capsys
):
    """Was: stride had only to be above 0; 32 s at 0.02 took 58.6 s against 3.0 s."""
    from tunesmith.cli.main import main

    refused = client.post("/v1/generations", json={"duration": 32.0, "stride": 0.02})
    assert refused.status_code == 422 and "greater than or equal to 1" in refused.text
    assert client.post("/v1/generations", json={"duration": 0.2, "stride": 1.0}).status_code == 202
    code = main(["generate", "x", "-o", str(tmp_path / "x.wav"), "--model", str(tiny_checkpoint),
                 "--duration", "32", "--stride", "0.02"])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and "stride must be a number of seconds in [1, 30]" in err[0]
    assert "decoder steps" in err[0] and not (tmp_path / "x.wav").exists()


def test_the_step_bound_is_stated_and_kept(client, tiny_model, monkeypatch):
    from tunesmith import musicgen
    from tunesmith.errors import InvalidOptionError
    from tunesmith.options import MAX_JOB_STEPS

    health = client.get("/healthz").json()
    assert health["min_stride"] == 1.0 and health["max_steps"] == MAX_JOB_STEPS
    monkeypatch.setattr(musicgen, "MAX_JOB_STEPS", 100)  # a 3 s piece takes 153
    with pytest.raises(InvalidOptionError, match="153 decoder steps; a call may take at most 100"):
        tiny_model.generate("x", 3.0)

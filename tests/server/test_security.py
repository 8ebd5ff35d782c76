"""What a request must be: a Host this server answers to (parsed strictly), an Origin of its
own for anything that changes state, a key whose failures slow down only their sender; and
the document's promises (405's Allow, an empty Idempotency-Key)."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.server.local import asgi_request
from tunesmith.server import create_app
from tunesmith.server.throttle import MAX_DELAY, MAX_PENDING, FailedLogins


@pytest.mark.parametrize(
    "host", ["testserver", "127.0.0.1:8799@evil.example", "evil.example", "127.0.0.1:80/x",
             "127.0.0.1:99999", "::1", "", "localhost:8000.evil.example"],
)  # fmt: skip
def test_only_loopback_names_pass_without_a_key(client, host):
    """Was: `Host: testserver` passed, and `127.0.0.1:8799@evil.example` read as 127.0.0.1."""
    response = client.get("/healthz", headers={"Host": host})
    assert response.status_code == 421, host
    served = response.json()["detail"].split("use one of")[1]
    assert "testserver" not in served and "localhost" in served


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.1:8000", "127.0.0.2:9", "localhost:1",
                                  "[::1]:8000", "LOCALHOST"])  # fmt: skip
def test_loopback_names_pass(client, host):
    assert client.get("/healthz", headers={"Host": host}).status_code == 200


def test_configured_public_names_pass(make_client):
    client = make_client(allowed_hosts=("music.example.org",))
    assert client.get("/healthz", headers={"Host": "music.example.org:443"}).status_code == 200
    assert client.get("/healthz", headers={"Host": "other.example.org"}).status_code == 421
    keyed = make_client(api_key="k")  # a key and no names: any well-formed name
    assert keyed.get("/healthz", headers={"Host": "music.example.org"}).status_code == 200
    assert keyed.get("/healthz", headers={"Host": "a@b"}).status_code == 421


@pytest.mark.parametrize(
    "headers",
    [{"Origin": "http://evil.example"}, {"Origin": "null"},
     {"Origin": "http://127.0.0.1:9999"}, {"Origin": "http://localhost"},
     {"Sec-Fetch-Site": "cross-site"}],
)  # fmt: skip
def test_cross_site_requests_that_change_state_are_refused(client, submit, headers):
    """Was: a page on any site could POST /v1/uploads as text/plain (no preflight): 201."""
    upload = client.post(
        "/v1/uploads", content=b"RIFF....", headers={"Content-Type": "text/plain", **headers}
    )
    assert upload.status_code == 403 and "cross-site" in upload.json()["detail"]
    job = client.post("/v1/generations", json={"duration": 0.2}, headers=headers)
    assert job.status_code == 403
    job_id = submit(client)
    assert client.delete(f"/v1/generations/{job_id}", headers=headers).status_code == 403
    assert client.get("/v1/generations", headers=headers).status_code == 200  # reads pass
    assert client.get("/v1/generations").json()["total"] == 1


def test_a_key_does_not_let_a_cross_site_request_through(make_client):
    client = make_client(api_key="k")
    headers = {"X-API-Key": "k", "Origin": "http://evil.example"}
    assert (
        client.post("/v1/generations", json={"duration": 0.2}, headers=headers).status_code == 403
    )


def test_same_origin_and_non_browser_requests_pass(client):
    for headers in ({"Origin": "http://127.0.0.1"}, {"Origin": "https://127.0.0.1"},
                    {"Sec-Fetch-Site": "same-origin"}, {}):  # fmt: skip
        response = client.post("/v1/generations", json={"duration": 0.2}, headers=headers)
        assert response.status_code == 202, (headers, response.text)
    page = client.post(
        "/v1/generations", json={"duration": 0.2},
        headers={"Host": "localhost:8000", "Origin": "http://localhost:8000"},
    )  # fmt: skip
    assert page.status_code == 202


def test_failed_logins_slow_down_only_their_sender(tiny_model, tmp_path):
    """Was: 100 concurrent wrong-key GETs made a right-key GET take 3.96 s (the delay slept
    in the thread pool every handler needs): it now ends before most of them."""
    app = create_app(tiny_model, tmp_path, api_key="right")

    async def timed(headers: dict[str, str]) -> tuple[int, float]:
        status = await asgi_request(app, "GET", "/v1/generations", headers)
        return status, time.monotonic()

    async def scenario() -> tuple[list[tuple[int, float]], tuple[int, float]]:
        wrong = [asyncio.create_task(timed({"X-API-Key": "wrong"})) for _ in range(100)]
        await asyncio.sleep(0.05)
        right = await timed({"X-API-Key": "right"})
        return await asyncio.gather(*wrong), right

    wrong, (status, finished) = asyncio.run(scenario())
    assert status == 200
    held = sorted(at for code, at in wrong if code == 401)
    assert finished < held[len(held) // 2], "the right key waited behind the wrong ones"
    assert len(held) == MAX_PENDING  # the rest were told 429 at once (bounded per client)
    app.state.tunesmith.store.close()


def test_the_delay_is_bounded_per_client():
    logins = FailedLogins(step=0.5)
    assert [logins.delay("a") for _ in range(6)] == [0.5, 1.0, 1.5, 2.0, 2.0, 2.0]
    assert logins.delay("b") == 0.5  # another client starts afresh
    assert MAX_DELAY == 2.0


def test_405_lists_every_method_of_the_path(client):
    """Was: `Allow: GET` where the path also takes DELETE."""
    response = client.put("/v1/generations/abc")
    assert response.status_code == 405
    assert response.headers["allow"] == "DELETE, GET, HEAD"
    assert client.patch("/v1/generations").headers["allow"] == "GET, HEAD, POST"
    assert client.put("/v1/uploads/" + "0" * 32).headers["allow"] == "DELETE, GET, HEAD"


def test_an_empty_idempotency_key_is_refused(client):
    """Was: "" was taken as a key."""
    response = client.post(
        "/v1/generations", json={"duration": 0.2}, headers={"Idempotency-Key": ""}
    )
    assert response.status_code == 422 and "idempotency" in response.json()["detail"].lower()
    assert client.get("/v1/generations").json()["total"] == 0

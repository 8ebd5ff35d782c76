"""The optional API key, and `serve()` refusing to open a keyless server to a network."""

from __future__ import annotations

from typing import Any

import pytest

from tunesmith.errors import InvalidOptionError
from tunesmith.server import app as server_app
from tunesmith.server import serve

KEY = "s3cret-key"


@pytest.fixture
def locked(make_client):
    return make_client(api_key=KEY)


@pytest.mark.parametrize(
    "headers",
    [{}, {"X-API-Key": "wrong"}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}],
)
def test_api_needs_the_key(locked, headers):
    for method, path in [("GET", "/v1/generations"), ("POST", "/v1/generations"),
                         ("GET", "/v1/generations/x"), ("DELETE", "/v1/generations/x"),
                         ("GET", "/v1/generations/x/audio")]:  # fmt: skip
        response = locked.request(method, path, headers=headers, json={"prompt": "x"})
        assert response.status_code == 401, (method, path)
        assert "API key" in response.json()["detail"]
        assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize("headers", [{"X-API-Key": KEY}, {"Authorization": f"Bearer {KEY}"}])
def test_either_header_carries_the_key(locked, headers, wait_job):
    response = locked.post("/v1/generations", json={"duration": 0.2}, headers=headers)
    assert response.status_code == 202
    locked.headers.update(headers)
    assert wait_job(locked, response.json()["id"])["status"] == "done"


def test_health_page_and_docs_stay_open(locked):
    assert locked.get("/healthz").json()["auth_required"] is True
    assert locked.get("/").status_code == 200
    assert locked.get("/docs").status_code == 200
    security = locked.get("/openapi.json").json()["components"]["securitySchemes"]
    assert {"HTTPBearer", "APIKeyHeader"} <= set(security)


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "localhost", "::1", "[::1]"])
def test_loopback_hosts(host):
    assert server_app.is_loopback(host)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.4", "example.com", ""])
def test_other_hosts(host):
    assert not server_app.is_loopback(host)


def test_serve_refuses_a_public_host_without_a_key(tmp_path, monkeypatch):
    monkeypatch.delenv("TUNESMITH_API_KEY", raising=False)
    with pytest.raises(InvalidOptionError, match="--api-key"):
        serve("no-such-model", "0.0.0.0", 8000, tmp_path, None, "cpu", 16, 4)


@pytest.mark.parametrize("env_key", [None, "from-env"])
def test_serve_loads_once_and_runs_uvicorn(tiny_checkpoint, tmp_path, monkeypatch, env_key):
    import uvicorn

    if env_key:
        monkeypatch.setenv("TUNESMITH_API_KEY", env_key)
    seen: dict[str, Any] = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: seen.update(app=app, **kw))
    api_key = None if env_key else "given"
    serve(str(tiny_checkpoint), "0.0.0.0", 8123, tmp_path / "d", api_key, "cpu", 3, 2)
    assert seen["host"] == "0.0.0.0" and seen["port"] == 8123
    assert seen["app"].state.tunesmith.api_key == (env_key or "given")
    assert (tmp_path / "d" / "tunesmith.db").is_file()


@pytest.mark.parametrize(
    "args,match",
    [((8000, 0, 4), "max-queue"), ((8000, 4, 0), "max-batch"), ((70000, 4, 4), "port")],
)
def test_serve_checks_its_numbers_before_loading(tmp_path, args, match):
    port, queue, batch = args
    with pytest.raises(InvalidOptionError, match=match):
        serve("no-such-model", "127.0.0.1", port, tmp_path, None, "cpu", queue, batch)

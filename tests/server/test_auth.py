"""The optional API key, and `serve()` refusing to open a keyless server to a network."""

from __future__ import annotations

from typing import Any

import pytest

from tunesmith.errors import InvalidOptionError
from tunesmith.server import ServiceSettings, process, serve
from tunesmith.server.settings import read_api_key

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
    assert process.is_loopback(host)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.4", "example.com", ""])
def test_other_hosts(host):
    assert not process.is_loopback(host)


def test_serve_refuses_a_public_host_without_a_key(tmp_path):
    settings = ServiceSettings(host="0.0.0.0", data_dir=tmp_path)
    with pytest.raises(InvalidOptionError, match="--api-key-file"):
        serve("no-such-model", settings, {"device": "cpu"})


@pytest.mark.parametrize("source", ["file", "env", "flag"])
def test_the_key_from_a_file_the_environment_or_the_flag(tmp_path, monkeypatch, source):
    """Was: the key could only be given as --api-key, which `ps` shows every user."""
    monkeypatch.delenv("TUNESMITH_API_KEY", raising=False)
    key_file = tmp_path / "key"
    key_file.write_text("from-file\n")
    if source == "env":
        monkeypatch.setenv("TUNESMITH_API_KEY", "from-env")
    got = read_api_key("from-flag", str(key_file) if source == "file" else None)
    assert got == {"file": "from-file", "env": "from-env", "flag": "from-flag"}[source]
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(InvalidOptionError, match=r"no key read|empty key"):
        read_api_key(None, str(tmp_path / "empty"))


def test_serve_loads_once_and_runs_uvicorn(tiny_checkpoint, tmp_path, monkeypatch):
    seen: dict[str, Any] = {}
    monkeypatch.setattr(
        process, "run", lambda app, sock, settings: seen.update(app=app, sock=sock, s=settings)
    )
    settings = ServiceSettings(
        host="127.0.0.1", port=0, data_dir=tmp_path / "d", api_key="given", max_queue=3,
        max_batch=2, keep_alive_seconds=4, max_connections=50,
    )  # fmt: skip
    serve(str(tiny_checkpoint), settings, {"device": "cpu"})
    assert seen["sock"].family.name == "AF_INET" and seen["s"].max_connections == 50
    keys = seen["app"].state.tunesmith.keys
    assert keys.match("given").name == "admin" and keys.match("given").admin
    assert (tmp_path / "d" / "tunesmith.db").is_file()


@pytest.mark.parametrize(
    "fields,match",
    [({"max_queue": 0}, "max-queue"), ({"max_batch": 0}, "max-batch"), ({"port": 70000}, "port"),
     ({"max_attempts": 0}, "max-attempts"), ({"log_format": "xml"}, "log-format")],
)  # fmt: skip
def test_service_settings_are_checked_before_loading(fields, match):
    with pytest.raises(InvalidOptionError, match=match):
        ServiceSettings(**fields)

"""A TestClient that calls as a program on this machine would: Host 127.0.0.1 (the server
answers 421 to a test client's own name, `testserver`)."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi.testclient import TestClient

LOCAL = "http://127.0.0.1"


class LocalClient(TestClient):
    def __init__(self, app: Any, **kwargs: Any) -> None:
        kwargs.setdefault("base_url", LOCAL)
        super().__init__(app, **kwargs)


async def asgi_request(
    app: Any, method: str, path: str, headers: dict[str, str] | None = None, body: bytes = b""
) -> int:
    """One request straight into the ASGI app (no lifespan, no client library): its status.
    Many of these run at once with asyncio.gather, as concurrent clients would."""
    sent: list[dict[str, Any]] = []
    given = False

    async def receive() -> dict[str, Any]:
        nonlocal given
        if not given:
            given = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http", "method": method, "path": path, "raw_path": path.encode(),
        "query_string": b"", "root_path": "", "http_version": "1.1", "scheme": "http",
        "headers": [(k.lower().encode(), v.encode()) for k, v in
                    {"host": "127.0.0.1:8000", **(headers or {})}.items()],
        "server": ("127.0.0.1", 8000), "client": ("127.0.0.1", 5000),
    }  # fmt: skip
    await app(scope, receive, send)
    status: int = sent[0]["status"]
    return status

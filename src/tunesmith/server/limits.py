"""A cap on request body size, enforced before the body reaches any handler."""

from __future__ import annotations

import asyncio
import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodySizeLimit:
    """Answer 413 to any request whose body exceeds `max_bytes`.

    A declared Content-Length is checked up front; a chunked body is read (at most one byte
    past the limit) and handed on only if it fits, so an endless body costs bounded memory.
    """

    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int,
        timeout: float = 30.0,
        larger: dict[str, int] | None = None,
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.larger = larger or {}  # paths that take bigger bodies (uploads), and how big
        self.timeout = timeout  # seconds a body may take to arrive, all of it

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "DELETE", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        limit = self.larger.get(scope["path"], self.max_bytes)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None:
            try:
                too_big = int(declared) > limit
            except ValueError:
                too_big = True
            if too_big:
                await self._refuse(send, limit)
                return
        body, more = b"", True
        deadline = asyncio.get_running_loop().time() + self.timeout
        while more:
            try:
                left = deadline - asyncio.get_running_loop().time()
                message = await asyncio.wait_for(receive(), max(0.0, left))
            except asyncio.TimeoutError:
                await _answer(send, 408, f"the request body took over {self.timeout:g} s to arrive")
                return
            if message["type"] != "http.request":
                return  # the client went away
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > limit:
                await self._refuse(send, limit)
                return

        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, send: Send, limit: int) -> None:
        await _answer(send, 413, f"request body is larger than {limit} bytes; send less")


async def _answer(send: Send, status: int, detail: str) -> None:
    """A JSON error answered by the middleware itself, before any handler."""
    payload = json.dumps({"detail": detail}).encode()
    await send({
        "type": "http.response.start", "status": status,
        "headers": [(b"content-type", b"application/json"),
                    (b"content-length", str(len(payload)).encode())],
    })  # fmt: skip
    await send({"type": "http.response.body", "body": payload})


class HostCheck:
    """Answer 421 to a request whose Host header names none of `allowed` (its port aside).

    A server without an API key on loopback is still reachable from a web page through DNS
    rebinding (a name that resolves to 127.0.0.1); such requests carry the foreign name."""

    def __init__(self, app: ASGIApp, allowed: tuple[str, ...]) -> None:
        self.app = app
        self.allowed = {h.lower() for h in allowed}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        host = dict(scope["headers"]).get(b"host", b"").decode("latin-1").lower()
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        if name in self.allowed or host in self.allowed:
            await self.app(scope, receive, send)
            return
        await _answer(
            send, 421, f"host {host!r} is not served here; use one of {sorted(self.allowed)}"
        )

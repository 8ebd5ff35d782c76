"""What a request must be before any handler sees it: a body of bounded size that arrives in
bounded time, a Host header this server answers to (parsed strictly), and, for a request
that changes anything, an Origin that is this server's own."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import re
from urllib.parse import urlsplit

from fastapi import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
_HOST = re.compile(
    r"^(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<name>[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?))"
    r"(?::(?P<port>[0-9]{1,5}))?$"
)


class BodySizeLimit:
    """Answer 413 to any request whose body exceeds `max_bytes`, 408 to one whose body takes
    longer than `timeout` seconds to arrive.

    A declared Content-Length is checked up front. Other bodies are read (at most one byte
    past the limit) and handed on only if they fit, so an endless body costs bounded memory.
    `streamed` paths (uploads) are not read here: their handler reads the body as it
    arrives, after the key is checked, and meets the same limits as it reads.
    """

    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int,
        timeout: float = 30.0,
        streamed: dict[str, int] | None = None,
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.streamed = streamed or {}  # paths whose handlers stream bodies, and their limit
        self.timeout = timeout  # seconds a body may take to arrive, all of it

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "DELETE", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        streamed = scope["path"] in self.streamed
        limit = self.streamed.get(scope["path"], self.max_bytes)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None:
            try:
                too_big = int(declared) > limit
            except ValueError:
                too_big = True
            if too_big:
                await self._refuse(send, limit)
                return
        deadline = asyncio.get_running_loop().time() + self.timeout
        if streamed:
            await self.app(scope, self._counted(receive, limit, deadline), send)
            return
        body, more = b"", True
        while more:
            try:
                message = await self._next(receive, deadline)
            except HTTPException as err:
                await _answer(send, err.status_code, str(err.detail))
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

    async def _next(self, receive: Receive, deadline: float) -> Message:
        try:
            left = deadline - asyncio.get_running_loop().time()
            return await asyncio.wait_for(receive(), max(0.0, left))
        except asyncio.TimeoutError:
            raise HTTPException(
                408, f"the request body took over {self.timeout:g} s to arrive"
            ) from None

    def _counted(self, receive: Receive, limit: int, deadline: float) -> Receive:
        """`receive` for a handler that reads the body itself: the same limits, raised as
        HTTP errors where it reads."""
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await self._next(receive, deadline)
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise HTTPException(413, _too_big(limit))
            return message

        return counted

    async def _refuse(self, send: Send, limit: int) -> None:
        await _answer(send, 413, _too_big(limit))


def _too_big(limit: int) -> str:
    return f"request body is larger than {limit} bytes; send less"


async def _answer(send: Send, status: int, detail: str) -> None:
    """A JSON error answered by the middleware itself, before any handler."""
    payload = json.dumps({"detail": detail}).encode()
    await send({
        "type": "http.response.start", "status": status,
        "headers": [(b"content-type", b"application/json"),
                    (b"content-length", str(len(payload)).encode())],
    })  # fmt: skip
    await send({"type": "http.response.body", "body": payload})


def parse_host(value: str) -> tuple[str, int | None] | None:
    """(host, port) of a Host header, or None if it is not one: a name or IPv4 address, or
    an [IPv6] address, then an optional port; nothing else (no user info, no path)."""
    found = _HOST.match(value)
    if found is None:
        return None
    port = found.group("port")
    if port is not None and not 0 < int(port) < 65536:
        return None
    host = found.group("v6") or found.group("name")
    if found.group("v6") is not None:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            return None
    return host.lower(), None if port is None else int(port)


def is_loopback_name(host: str) -> bool:
    """`localhost` or a loopback address (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class HostCheck:
    """Answer 421 to a request whose Host header is not well formed or names a host this
    server does not answer to: loopback names, and `names` (the configured public names);
    `any_name` serves every well-formed name (a server with keys and no names given).

    A server without an API key on loopback is still reachable from a web page through DNS
    rebinding (a name that resolves to 127.0.0.1); such requests carry the foreign name."""

    def __init__(self, app: ASGIApp, names: tuple[str, ...] = (), any_name: bool = False) -> None:
        self.app = app
        self.names = {n.lower().rstrip(".") for n in names}
        self.any_name = any_name

    def serves(self, host_header: str) -> bool:
        parsed = parse_host(host_header)
        if parsed is None:
            return False
        host = parsed[0]
        return self.any_name or is_loopback_name(host) or host in self.names

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        host = dict(scope["headers"]).get(b"host", b"").decode("latin-1")
        if self.serves(host):
            await self.app(scope, receive, send)
            return
        served = ["localhost", "127.0.0.1", "[::1]", *sorted(self.names)]
        await _answer(send, 421, f"host {host[:100]!r} is not served here; use one of {served}")


class OriginCheck:
    """Answer 403 to a request that changes something (not GET, HEAD or OPTIONS) sent by a
    page of another site: an Origin header that is not this server's own (scheme, host and
    port as the Host header says), or, without one, a browser's Sec-Fetch-Site saying
    cross-site. A page on any site can send a simple request (a form, a text/plain POST)
    without a preflight; a key-less local server would obey it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in SAFE_METHODS:
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        origin = headers.get(b"origin", b"").decode("latin-1")
        fetch_site = headers.get(b"sec-fetch-site", b"").decode("latin-1").lower()
        host = headers.get(b"host", b"").decode("latin-1")
        if origin:
            foreign = not same_origin(origin, host)
        else:
            foreign = fetch_site in ("cross-site", "same-site")
        if not foreign:
            await self.app(scope, receive, send)
            return
        await _answer(
            send, 403, f"cross-site request refused: origin {origin[:100] or fetch_site!r} is "
            "not this server; send it from this server's own page, or without a browser",
        )  # fmt: skip


_DEFAULT_PORTS = {"http": 80, "https": 443}


def same_origin(origin: str, host_header: str) -> bool:
    """Whether an Origin header names the host (and port) the request was sent to."""
    parts = urlsplit(origin)
    host = parse_host(host_header)
    if parts.scheme not in _DEFAULT_PORTS or host is None or parts.hostname is None:
        return False
    try:
        origin_port = parts.port or _DEFAULT_PORTS[parts.scheme]
    except ValueError:
        return False
    if parts.hostname.lower() != host[0] or parts.username or parts.path not in ("", "/"):
        return False
    # A Host without a port is the default port of the page's scheme (a TLS proxy in front
    # makes the page https while this server hears http: the scheme alone is not compared).
    return (host[1] if host[1] is not None else _DEFAULT_PORTS[parts.scheme]) == origin_port

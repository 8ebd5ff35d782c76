"""Half-open connections and stalled heads end: a real uvicorn server with the protocol
`tunesmith serve` uses, on a loopback port, and raw sockets that never finish a request."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import pytest

from tunesmith.server import create_app
from tunesmith.server.connections import HeadTimeoutProtocol


@pytest.fixture
def server(tiny_model: Any, tmp_path) -> Any:
    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = create_app(tiny_model, tmp_path)
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", http=HeadTimeoutProtocol,
        timeout_keep_alive=1, limit_concurrency=400,
    )  # fmt: skip
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not srv.started:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    yield port
    srv.should_exit = True
    thread.join(20)


def _closed(sock: socket.socket, within: float) -> bool:
    sock.settimeout(within)
    try:
        return sock.recv(1) == b""
    except TimeoutError:
        return False
    except ConnectionError:
        return True


def test_half_open_connections_are_closed(server) -> None:
    """Was: 500 half-open connections held with no timeout."""
    sockets = [socket.create_connection(("127.0.0.1", server)) for _ in range(300)]
    try:
        time.sleep(1.5)
        closed = sum(_closed(s, 2.0) for s in sockets)
        assert closed == 300, f"{closed} of 300 idle connections closed"
    finally:
        for s in sockets:
            s.close()


def test_a_trickled_head_does_not_hold_the_connection(server) -> None:
    sock = socket.create_connection(("127.0.0.1", server))
    began = time.monotonic()
    try:
        for ch in b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ":
            sock.sendall(bytes([ch]))
            time.sleep(0.02)
            if time.monotonic() - began > 3:
                break
        assert _closed(sock, 3.0)
        assert time.monotonic() - began < 5
    finally:
        sock.close()


def test_whole_requests_are_still_served(server) -> None:
    with socket.create_connection(("127.0.0.1", server)) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        sock.settimeout(5)
        assert sock.recv(100).startswith(b"HTTP/1.1 200")

"""The process that serves the app (`serve`): everything that can be refused is refused before
the model loads (no key off loopback, a bad keys file, an unwritable data folder, a port in
use), then uvicorn runs on the socket bound here.

SIGTERM (or a first Ctrl-C) drains while the server keeps answering: new jobs get 503,
reads and the running job's streams go on, /readyz says 503, until the running batch ends
or `--drain-seconds` pass; only then does uvicorn close its sockets. A second signal stops
at once.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
from pathlib import Path
from types import FrameType
from typing import Any

import uvicorn

from ..errors import InvalidOptionError
from .connections import HeadTimeoutProtocol
from .keys import KeyRing
from .limits import is_loopback_name
from .operations import JsonFormatter
from .settings import API_KEY_ENV, ServiceSettings
from .worker import Worker

log = logging.getLogger("tunesmith.server")


def is_loopback(host: str) -> bool:
    """True for `localhost` and loopback addresses (127.0.0.0/8, ::1)."""
    return is_loopback_name(host.strip().strip("[]").lower())


def serve(model_name: str, settings: ServiceSettings, load: dict[str, Any]) -> None:
    """Load the model once and serve the API and web page until stopped (SIGTERM drains).

    Binding anything but loopback without a key is refused, so a server is never open to a
    network by accident. `load`: the keywords of `MusicGen.from_pretrained`.
    """
    keys = KeyRing.of(settings.api_key, settings.api_keys_file)
    if not is_loopback(settings.host) and not keys:
        raise InvalidOptionError(
            f"refusing to serve on {settings.host!r} without an API key: anyone who can reach "
            f"it could use it. Pass --api-key-file FILE or --api-keys-file FILE (or set "
            f"{API_KEY_ENV}), or bind 127.0.0.1"
        )
    data_dir = settings.data_dir
    try:
        Path(data_dir).mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise InvalidOptionError(f"cannot use data folder {str(data_dir)!r}: {err}") from None
    if not os.access(data_dir, os.W_OK):
        raise InvalidOptionError(f"data folder {str(data_dir)!r} is not writable")
    sock = bind(settings.host, settings.port)
    try:
        from ..musicgen import MusicGen
        from .app import create_app

        model = MusicGen.from_pretrained(model_name, **load)
        app = create_app(model, Path(data_dir), api_keys=keys, **settings.app_options())
        host = settings.host
        shown = f"[{host}]" if ":" in host else host
        print(
            f"tunesmith: {model_name} on http://{shown}:{sock.getsockname()[1]}/  "
            f"(jobs and audio in {Path(data_dir).resolve()})",
            flush=True,
        )
        _log_to_stderr(settings.log_format)
        run(app, sock, settings)
    finally:
        sock.close()


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound now: a port in use is one line before the model loads."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as err:
        sock.close()
        raise InvalidOptionError(
            f"cannot listen on {host} port {port}: {err.strerror or err} (another server may "
            "use it: stop it, or choose another --port)"
        ) from None
    sock.set_inheritable(True)
    return sock


def run(app: Any, sock: socket.socket, settings: ServiceSettings) -> None:
    """uvicorn on `sock`, draining on SIGTERM (see the module's docstring)."""
    config = uvicorn.Config(
        app,
        log_level="info",
        # Open /stream responses would otherwise hold a shutdown; the drain came before.
        timeout_graceful_shutdown=5,
        timeout_keep_alive=int(settings.keep_alive_seconds),
        limit_concurrency=settings.max_connections,
        http=HeadTimeoutProtocol,  # a request head must arrive within the keep-alive time
        log_config=None if settings.log_format == "json" else uvicorn.config.LOGGING_CONFIG,
    )
    DrainingServer(config, app.state.tunesmith.worker).run(sockets=[sock])


class DrainingServer(uvicorn.Server):
    """uvicorn's Server, whose first SIGTERM or SIGINT drains the worker before uvicorn
    stops listening (uvicorn alone closes its sockets at once: new connections were
    refused for the whole drain)."""

    def __init__(self, config: uvicorn.Config, worker: Worker) -> None:
        super().__init__(config)
        self.worker = worker
        self.draining = False

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.draining or sig not in (signal.SIGTERM, signal.SIGINT):
            super().handle_exit(sig, frame)  # the second signal: stop now
            return
        self.draining = True
        captured = getattr(self, "_captured_signals", None)
        if captured is not None:
            captured.append(sig)  # uvicorn raises it again once shut down, as it would
        log.info(
            "draining: no new jobs, the running batch has up to %gs to finish "
            "(signal again to stop now)", self.worker.drain_seconds,
        )  # fmt: skip
        self.worker.begin_drain()
        threading.Thread(target=self._exit_when_drained, daemon=True).start()

    def _exit_when_drained(self) -> None:
        # The running batch ended, or the drain's time is up: stop it (back to the queue, its
        # streams end), then let uvicorn close its sockets.
        self.worker.stop()
        self.should_exit = True


def _log_to_stderr(log_format: str = "text") -> None:
    """Show the worker's one line per batch (and its errors) beside uvicorn's own log; with
    "json", every line of both as one JSON object."""
    handler = logging.StreamHandler()
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
        names = ["tunesmith", "uvicorn", "uvicorn.error", "uvicorn.access"]
    else:
        handler.setFormatter(logging.Formatter("%(levelname)s:     %(name)s: %(message)s"))
        names = ["tunesmith"]
    for name in names:
        logger = logging.getLogger(name)
        logger.handlers = [handler]
        logger.setLevel(logging.INFO)
        logger.propagate = False

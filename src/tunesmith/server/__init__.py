"""`tunesmith serve`: an HTTP API and a web page over one loaded model.

    app = create_app(model, Path("data"))      # FastAPI app (tests, or your own ASGI server)
    serve("facebook/musicgen-small", ServiceSettings(port=8000), load={"device": "cpu"})

Parts: `schemas` (request/response JSON), `store` (SQLite + audio folder), `worker` (queue,
batching, cancellation), `streams` (live audio fan-out), `routes` (the /v1 endpoints),
`app` (assembly, errors, auth, serve), `limits` (body size and time, Host), `operations`
(request ids, JSON logs, metrics, local docs), `settings` (ServiceSettings),
`static/` (the page, no build step).

An interface, like `cli`: it may import the public API (`tunesmith.musicgen`), `audio`,
`options` and `errors`; nothing in the package below it imports it.
"""

from typing import Any

from .settings import ServiceSettings

__all__ = ["ServiceSettings", "create_app", "serve"]


def __getattr__(name: str) -> Any:
    """create_app and serve on first use: `settings` alone (the CLI's defaults) needs no
    FastAPI."""
    if name in ("create_app", "serve"):
        from . import app

        return getattr(app, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""`tunesmith serve`: an HTTP API and a web page over one loaded model.

    app = create_app(model, Path("data"))      # FastAPI app (tests, or your own ASGI server)
    serve("facebook/musicgen-small", "127.0.0.1", 8000, Path("data"), None, None, 16, 4)

Parts: `schemas` (request/response JSON), `store` (SQLite + audio folder), `worker` (queue,
batching, cancellation), `streams` (live audio fan-out), `routes` (the /v1 endpoints),
`app` (assembly, errors, auth, serve), `static/` (the page, no build step).

An interface, like `cli`: it may import the public API (`tunesmith.musicgen`), `audio`,
`options` and `errors`; nothing in the package below it imports it.
"""

from .app import create_app, serve

__all__ = ["create_app", "serve"]

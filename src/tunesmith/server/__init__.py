"""`tunesmith serve`: an HTTP API and a web page over one loaded model.

    app = create_app(model, Path("data"))      # FastAPI app (tests, or your own ASGI server)
    serve("facebook/musicgen-small", ServiceSettings(port=8000), load={"device": "cpu"})

Parts: `schemas` (request/response JSON), `store` + `migrations` (SQLite + audio folder),
`worker` (queue, batching, cancellation) with `runs` (one batch generated), `output` (the
file, as the CLI writes it) and `outcomes` (held outcomes, retention), `disk` (free space,
the full-disk reserve), `streams` (live audio fan-out), `routes` + `views` (the /v1
generations), `uploads` + `upload_files`, `pictures` (the kept spectrogram), `keys` + `auth`
+ `throttle` (named keys, who is calling, failed-login delays), `limits` (body size and
time, Host, Origin), `state` (what handlers share), `app` (assembly, errors, health),
`process` (serve: the socket, uvicorn, the SIGTERM drain), `operations` (request ids, JSON
logs, metrics, local docs), `settings` (ServiceSettings), `static/` (the page, no build
step).

An interface, like `cli`: it may import the public API (`tunesmith.musicgen`), `audio`,
`options` and `errors`; nothing in the package below it imports it.
"""

from typing import Any

from .settings import ServiceSettings

__all__ = ["ServiceSettings", "create_app", "serve"]


def __getattr__(name: str) -> Any:
    """create_app and serve on first use: `settings` alone (the CLI's defaults) needs no
    FastAPI."""
    if name == "create_app":
        from .app import create_app

        return create_app
    if name == "serve":
        from .process import serve

        return serve
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

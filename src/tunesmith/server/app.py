"""The FastAPI app (`create_app`) and the process that serves it (`serve`)."""

from __future__ import annotations

import ipaddress
import logging
import os
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import __version__
from ..checkpoints.hub import looks_like_path
from ..errors import InvalidOptionError, TunesmithError
from ..options import MAX_DURATION
from . import audiofiles
from .limits import BodySizeLimit, HostCheck
from .operations import JsonFormatter, RequestIds, docs_assets, metrics_text
from .routes import ServerState, get_state, router
from .schemas import AdapterInfo, ErrorBody, Health, QueueState
from .settings import API_KEY_ENV, ServiceSettings
from .store import JobStore
from .streams import StreamHub
from .uploads import router as uploads_router
from .worker import Worker

if TYPE_CHECKING:
    from ..musicgen import MusicGen

STATIC = Path(__file__).parent / "static"
MAX_BODY_BYTES = 16 * 1024
MAX_UPLOAD_BYTES = 32 * 2**20  # an uploaded audio prompt or melody
SERVICE = ServiceSettings()  # the defaults, defined once there
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]", "::1", "testserver")
DESCRIPTION = """Text to music with MusicGen. Queue a generation with `POST /v1/generations`,
poll it, then fetch `/audio` (or listen on `/stream` while it is made). When the server has an
API key, send it as `Authorization: Bearer KEY` or `X-API-Key: KEY`."""


def create_app(
    model: MusicGen,
    data_dir: Path,
    *,
    api_key: str | None = None,
    max_queue: int = SERVICE.max_queue,
    max_batch: int = SERVICE.max_batch,
    max_body_bytes: int = MAX_BODY_BYTES,
    max_attempts: int = SERVICE.max_attempts,
    drain_seconds: float = SERVICE.drain_seconds,
    min_free_bytes: int = SERVICE.min_free_bytes,
    allowed_hosts: tuple[str, ...] | None = None,
    body_timeout: float = SERVICE.request_timeout,
    keep_days: float | None = None,
    max_disk_bytes: int | None = None,
    auth_delay_step: float = 0.1,
    max_upload_bytes: int = MAX_UPLOAD_BYTES,
) -> FastAPI:
    """The app for one loaded model; jobs and audio live under `data_dir`.

    The worker thread starts and stops with the app's lifespan (`with TestClient(app)`, or
    uvicorn). Opening `data_dir` takes up the jobs a previous process left queued, and puts
    back in the queue the ones it was running (at most `max_attempts` starts each). Stopping
    drains for up to `drain_seconds`. Below `min_free_bytes` free in the data folder, new jobs
    are refused (507) and /readyz says so. allowed_hosts: the Host headers served; None is
    any with an API key, and only loopback names without one (a foreign Host is a DNS
    rebinding attempt on a key-less local server).
    """
    if max_queue < 1 or max_batch < 1:
        raise InvalidOptionError(
            f"max_queue and max_batch must be at least 1, got {max_queue} and {max_batch}"
        )
    if max_attempts < 1 or drain_seconds < 0:
        raise InvalidOptionError("max_attempts must be at least 1 and drain_seconds at least 0")
    store = JobStore(Path(data_dir), max_attempts=max_attempts)
    hub = StreamHub()
    worker = Worker(
        model, store, hub, max_queue=max_queue, max_batch=max_batch, drain_seconds=drain_seconds,
        keep_seconds=None if keep_days is None else keep_days * 86400,
        max_audio_bytes=max_disk_bytes,
    )  # fmt: skip
    state = ServerState(
        model=model, store=store, worker=worker, hub=hub, api_key=api_key or None,
        min_free_bytes=min_free_bytes, auth_delay_step=auth_delay_step,
    )  # fmt: skip
    if allowed_hosts is None and state.api_key is None:
        allowed_hosts = LOOPBACK_HOSTS

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        worker.start()
        try:
            yield
        finally:
            worker.stop()
            store.close()

    app = FastAPI(
        title="tunesmith", version=__version__, description=DESCRIPTION, lifespan=lifespan,
        docs_url=None, redoc_url=None,  # our own /docs below: from local files, not a CDN
    )  # fmt: skip
    app.state.tunesmith = state
    app.add_middleware(
        BodySizeLimit, max_bytes=max_body_bytes, timeout=body_timeout,
        larger={"/v1/uploads": max_upload_bytes},
    )  # fmt: skip
    app.add_middleware(RequestIds)
    if allowed_hosts is not None:
        app.add_middleware(HostCheck, allowed=allowed_hosts)
    app.add_exception_handler(RequestValidationError, _validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _http_error)  # type: ignore[arg-type]
    app.add_exception_handler(TunesmithError, _tunesmith_error)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, _internal_error)
    app.include_router(router)
    app.include_router(uploads_router)
    app.openapi = lambda: _openapi(app, auth=state.api_key is not None)  # type: ignore[method-assign]

    @app.get(
        "/readyz", tags=["service"],
        responses={503: {"model": ErrorBody, "description": "Not taking jobs now, and why."}},
    )  # fmt: skip
    def readyz(state: ServerState = Depends(get_state)) -> dict[str, str]:
        """Whether the server takes jobs now: its worker runs and its disk has room."""
        reason = state.not_ready()
        if reason is not None:
            raise StarletteHTTPException(503, reason)
        return {"status": "ready"}

    @app.get("/healthz", response_model=Health, tags=["service"])
    def healthz(state: ServerState = Depends(get_state)) -> Health:
        """Liveness, the model's limits, writable formats, and whether requests need a key."""
        queued, running = state.worker.counts()
        return Health(
            status="ok",
            ready=state.not_ready() is None,
            model=Path(state.model.name).name
            if looks_like_path(state.model.name)
            else state.model.name,
            sample_rate=state.model.sample_rate,
            max_duration=MAX_DURATION,
            window_seconds=state.model.max_duration,
            audio_channels=state.model.audio_channels,
            melody=state.model.config.melody is not None,
            formats=list(audiofiles.available_formats()),
            auth_required=state.api_key is not None,
            adapters=[  # the folder's name, never its path on this machine
                AdapterInfo(name=a["name"], scale=a["scale"], rank=a["rank"], layers=a["layers"])
                for a in state.model.adapters
            ],
            queue=QueueState(
                queued=queued, running=running, max_queue=max_queue, max_batch=max_batch
            ),
        )

    @app.get("/metrics", tags=["service"], response_class=Response,
             responses={200: {"content": {"text/plain": {}}}})  # fmt: skip
    def metrics(state: ServerState = Depends(get_state)) -> Response:
        """Prometheus metrics: queue depth, jobs by status, decoder steps per second,
        generation seconds, readiness."""
        body, media_type = metrics_text(state)
        return Response(body, media_type=media_type)

    assets = docs_assets()
    if assets is not None:
        app.mount("/docs-assets", StaticFiles(directory=assets), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    def docs() -> Response:
        if assets is None:
            return HTMLResponse(
                "<p>The API docs need Swagger UI's files: pip install 'tunesmith[server]'. "
                'The document itself is at <a href="/openapi.json">/openapi.json</a>.</p>'
            )
        return get_swagger_ui_html(
            openapi_url="/openapi.json", title="tunesmith API",
            swagger_js_url="/docs-assets/swagger-ui-bundle.js",
            swagger_css_url="/docs-assets/swagger-ui.css",
            swagger_favicon_url="/docs-assets/favicon-32x32.png",
        )  # fmt: skip

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    """422 with one readable line ("duration: Input should be greater than 0") plus details."""
    errors = []
    for err in exc.errors():
        where = ".".join(str(part) for part in err.get("loc", ()) if part != "body")
        errors.append({"field": where, "message": err.get("msg", ""), "type": err.get("type")})
    detail = "; ".join(f"{e['field'] or 'body'}: {e['message']}" for e in errors)
    return JSONResponse({"detail": detail or "invalid request", "errors": errors}, 422)


def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    return JSONResponse({"detail": exc.detail}, exc.status_code, headers=exc.headers)


def _tunesmith_error(request: Request, exc: TunesmithError) -> JSONResponse:
    return JSONResponse({"detail": without_paths(str(exc))}, 422)


def _internal_error(request: Request, exc: Exception) -> JSONResponse:
    """A bug of ours: logged in full here, one line without server details to the client."""
    logging.getLogger("tunesmith.server").exception("internal error on %s", request.url.path)
    return JSONResponse({"detail": f"internal server error ({type(exc).__name__})"}, 500)


_PATH = re.compile(r"(?<![\w.:/])/(?:[\w.\-]+/)+[\w.\-]*")


def without_paths(message: str) -> str:
    """A message with absolute file paths cut to their last part (a client has no business
    knowing the server's folders)."""
    return _PATH.sub(lambda m: m.group(0).rstrip("/").rsplit("/", 1)[-1], message)


def _openapi(app: FastAPI, auth: bool) -> dict[str, Any]:
    """The OpenAPI document as this server behaves: without an API key, no security."""
    if app.openapi_schema is None:
        schema = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        if not auth:
            schema.get("components", {}).pop("securitySchemes", None)
            for path in schema.get("paths", {}).values():
                for operation in path.values():
                    operation.pop("security", None)
                    operation.get("responses", {}).pop("401", None)
        app.openapi_schema = schema
    return app.openapi_schema


def is_loopback(host: str) -> bool:
    """True for `localhost` and loopback addresses (127.0.0.0/8, ::1)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def serve(model_name: str, settings: ServiceSettings, load: dict[str, Any]) -> None:
    """Load the model once and serve the API and web page until stopped (SIGTERM drains).

    Binding anything but loopback without a key is refused, so a server is never open to a
    network by accident. `load`: the keywords of `MusicGen.from_pretrained`.
    """
    if not is_loopback(settings.host) and settings.api_key is None:
        raise InvalidOptionError(
            f"refusing to serve on {settings.host!r} without an API key: anyone who can reach "
            f"it could use it. Pass --api-key-file FILE (or set {API_KEY_ENV}), or bind 127.0.0.1"
        )
    data_dir = settings.data_dir
    try:
        Path(data_dir).mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise InvalidOptionError(f"cannot use data folder {str(data_dir)!r}: {err}") from None
    if not os.access(data_dir, os.W_OK):
        raise InvalidOptionError(f"data folder {str(data_dir)!r} is not writable")

    import uvicorn

    from ..musicgen import MusicGen
    from .connections import HeadTimeoutProtocol

    model = MusicGen.from_pretrained(model_name, **load)
    app = create_app(model, Path(data_dir), **settings.app_options())
    host = settings.host
    shown = f"[{host}]" if ":" in host else host
    print(
        f"tunesmith: {model_name} on http://{shown}:{settings.port}/  (jobs and audio in {data_dir})"
    )
    _log_to_stderr(settings.log_format)
    config: dict[str, Any] = {
        "log_level": "info",
        # Open /stream responses would otherwise hold a shutdown until their jobs end; the
        # worker's own drain (--drain-seconds) comes after.
        "timeout_graceful_shutdown": 5,
        "timeout_keep_alive": settings.keep_alive_seconds,
        "limit_concurrency": settings.max_connections,
        "http": HeadTimeoutProtocol,  # a request head must arrive within the keep-alive time
        "log_config": None if settings.log_format == "json" else uvicorn.config.LOGGING_CONFIG,
    }
    uvicorn.run(app, host=host, port=settings.port, **config)


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

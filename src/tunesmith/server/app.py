"""The FastAPI app (`create_app`): the routes, the checks every request passes first (Host,
Origin, body size and time, the key), error answers, health, metrics and docs."""

from __future__ import annotations

import logging
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
from ..errors import InvalidOptionError, TunesmithError
from ..options import MAX_DURATION, MAX_JOB_STEPS, MIN_STRIDE
from . import audiofiles
from .auth import Caller, caller, optional_caller
from .disk import DiskGuard
from .keys import KeyRing
from .limits import BodySizeLimit, HostCheck, OriginCheck
from .operations import RequestIds, docs_assets, metrics_text
from .routes import router
from .schemas import AdapterInfo, ErrorBody, Health, QueueState
from .settings import ServiceSettings
from .state import ServerState, get_state
from .store import JobStore
from .streams import StreamHub
from .throttle import FailedLogins
from .uploads import router as uploads_router
from .worker import Worker

if TYPE_CHECKING:
    from ..musicgen import MusicGen

STATIC = Path(__file__).parent / "static"
MAX_BODY_BYTES = 16 * 1024
MAX_UPLOAD_BYTES = 32 * 2**20  # an uploaded audio prompt or melody
SERVICE = ServiceSettings()  # the defaults, defined once there
DESCRIPTION = """Text to music with MusicGen. Queue a generation with `POST /v1/generations`,
poll it, then fetch `/audio` (or listen on `/stream` while it is made). When the server has
API keys, send one as `Authorization: Bearer KEY` or `X-API-Key: KEY`: each key sees only the
jobs and uploads it made (an admin key sees all)."""
__all__ = ["create_app"]


def create_app(
    model: MusicGen,
    data_dir: Path,
    *,
    api_key: str | None = None,
    api_keys: KeyRing | None = None,
    max_queue: int = SERVICE.max_queue,
    max_batch: int = SERVICE.max_batch,
    max_body_bytes: int = MAX_BODY_BYTES,
    max_attempts: int = SERVICE.max_attempts,
    drain_seconds: float = SERVICE.drain_seconds,
    min_free_bytes: int = SERVICE.min_free_bytes,
    allowed_hosts: tuple[str, ...] = (),
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
    are refused (507), queued ones wait, and /readyz says so. api_key: one admin key;
    api_keys: named keys (`keys.KeyRing`); neither: no key is asked for. allowed_hosts: the
    public names served besides loopback ones; without them, a server with keys serves any
    name and one without only loopback names (a foreign Host is a DNS rebinding attempt on a
    key-less local server).
    """
    if max_queue < 1 or max_batch < 1:
        raise InvalidOptionError(
            f"max_queue and max_batch must be at least 1, got {max_queue} and {max_batch}"
        )
    if max_attempts < 1 or drain_seconds < 0:
        raise InvalidOptionError("max_attempts must be at least 1 and drain_seconds at least 0")
    keys = KeyRing([*(api_keys.keys if api_keys else []), *KeyRing.of(api_key).keys])
    store = JobStore(Path(data_dir), max_attempts=max_attempts)
    disk = DiskGuard(store.data_dir, min_free_bytes)
    hub = StreamHub()

    def redact(message: str) -> str:  # the worker's errors, as the state words them
        return state.without_paths(message)

    worker = Worker(
        model, store, hub, max_queue=max_queue, max_batch=max_batch, drain_seconds=drain_seconds,
        keep_seconds=None if keep_days is None else keep_days * 86400,
        max_audio_bytes=max_disk_bytes, disk=disk, redact=redact,
    )  # fmt: skip
    state = ServerState(
        model=model, store=store, worker=worker, hub=hub, keys=keys, disk=disk,
        logins=FailedLogins(auth_delay_step), max_queue=max_queue, max_batch=max_batch,
    )  # fmt: skip
    worker.model_name = state.model_name  # the files' tags name the model, not its path

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
    # Outermost last: Host, then Origin, then request ids, then the body's limits.
    app.add_middleware(
        BodySizeLimit, max_bytes=max_body_bytes, timeout=body_timeout,
        streamed={"/v1/uploads": max_upload_bytes},
    )  # fmt: skip
    app.add_middleware(RequestIds)
    app.add_middleware(OriginCheck)
    app.add_middleware(HostCheck, names=allowed_hosts, any_name=bool(keys) and not allowed_hosts)
    app.add_exception_handler(RequestValidationError, _validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _http_error)  # type: ignore[arg-type]
    app.add_exception_handler(TunesmithError, _tunesmith_error)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, _internal_error)
    app.include_router(router)
    app.include_router(uploads_router)
    app.openapi = lambda: _openapi(app, auth=bool(keys))  # type: ignore[method-assign]
    _service_routes(app)
    return app


def _service_routes(app: FastAPI) -> None:
    """/readyz, /healthz, /metrics, /docs and the page."""

    @app.get(
        "/readyz", tags=["service"],
        responses={503: {"model": ErrorBody, "description": "Not taking jobs now, and why."}},
    )  # fmt: skip
    async def readyz(state: ServerState = Depends(get_state)) -> dict[str, str]:
        """Whether the server takes jobs now: its worker runs and its disk has room. Open to
        all (load balancers ask it without a key)."""
        reason = state.not_ready()
        if reason is not None:
            raise StarletteHTTPException(503, reason)
        return {"status": "ready"}

    @app.get(
        "/healthz", response_model=Health, tags=["service"],
        # A key is optional here: without one, liveness only (the empty requirement says so)
        openapi_extra={"security": [{"HTTPBearer": []}, {"APIKeyHeader": []}, {}]},
    )  # fmt: skip
    async def healthz(
        who: Caller | None = Depends(optional_caller), state: ServerState = Depends(get_state)
    ) -> Health:
        """Liveness; with a key (or on a server without keys), the model, its limits, the
        writable formats and the queue."""
        ready, auth = state.not_ready() is None, bool(state.keys)
        if who is None:
            return Health(status="ok", ready=ready, auth_required=auth)
        queued, running = state.worker.counts()
        return Health(
            status="ok", ready=ready, auth_required=auth, model=state.model_name,
            sample_rate=state.model.sample_rate, max_duration=MAX_DURATION,
            window_seconds=state.model.max_duration, min_stride=MIN_STRIDE,
            max_steps=MAX_JOB_STEPS, audio_channels=state.model.audio_channels,
            melody=state.model.config.melody is not None,
            formats=list(audiofiles.available_formats()),
            adapters=[  # the folder's name, never its path on this machine
                AdapterInfo(name=a["name"], scale=a["scale"], rank=a["rank"], layers=a["layers"])
                for a in state.model.adapters
            ],
            queue=QueueState(
                queued=queued, running=running, max_queue=state.max_queue,
                max_batch=state.max_batch,
            ),
        )  # fmt: skip

    @app.get("/metrics", tags=["service"], response_class=Response,
             responses={200: {"content": {"text/plain": {}}},
                        401: {"model": ErrorBody, "description": "Keys are set: send one."}})  # fmt: skip
    def metrics(_: Caller = Depends(caller), state: ServerState = Depends(get_state)) -> Response:
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


def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    """422 with one readable line ("duration: Input should be greater than 0") plus details;
    400 for a body that is not JSON at all."""
    errors = []
    for err in exc.errors():
        where = ".".join(str(part) for part in err.get("loc", ()) if part != "body")
        if err.get("type") == "json_invalid":
            why = (err.get("ctx") or {}).get("error", "")
            return JSONResponse({"detail": f"the body is not valid JSON: {why}".strip()}, 400)
        errors.append({"field": where, "message": err.get("msg", ""), "type": err.get("type")})
    detail = "; ".join(f"{e['field'] or 'body'}: {e['message']}" for e in errors)
    return JSONResponse({"detail": detail or "invalid request", "errors": errors}, 422)


def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    headers = dict(exc.headers or {})
    if exc.status_code == 405:  # every method of the path, not only the first route's
        headers["Allow"] = ", ".join(allowed_methods(request))
    return JSONResponse({"detail": exc.detail}, exc.status_code, headers=headers)


def allowed_methods(request: Request) -> list[str]:
    """The methods the document lists for the request's path (HEAD with GET)."""
    methods: set[str] = set()
    for template, operations in request.app.openapi().get("paths", {}).items():
        pattern = "^" + re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template)) + "$"
        if re.match(pattern, request.url.path):
            methods |= {m.upper() for m in operations}
    if "GET" in methods:
        methods.add("HEAD")
    return sorted(methods)


def _tunesmith_error(request: Request, exc: TunesmithError) -> JSONResponse:
    state: ServerState = request.app.state.tunesmith
    return JSONResponse({"detail": state.without_paths(str(exc))}, 422)


def _internal_error(request: Request, exc: Exception) -> JSONResponse:
    """A bug of ours: logged in full here, one line without server details to the client."""
    logging.getLogger("tunesmith.server").exception("internal error on %s", request.url.path)
    return JSONResponse({"detail": f"internal server error ({type(exc).__name__})"}, 500)


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

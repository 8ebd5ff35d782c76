"""What a team running the service needs besides the API: request ids, JSON logs, Prometheus
metrics, and the API docs served from this machine (no CDN, so they work offline)."""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from typing import TYPE_CHECKING, Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

if TYPE_CHECKING:
    from .routes import ServerState

REQUEST_ID = "X-Request-ID"
_GOOD_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
log = logging.getLogger("tunesmith.server.access")


class RequestIds:
    """Echo the caller's X-Request-ID (or a new one) on every response, and log one line per
    request with it: method, path, status, milliseconds."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope["headers"]).get(REQUEST_ID.lower().encode(), b"").decode("latin-1")
        request_id = given if _GOOD_ID.match(given) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        began = time.perf_counter()
        status = 500

        async def tagged(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                headers.append((REQUEST_ID.lower().encode(), request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, tagged)
        finally:
            log.info(
                "%s %s %d %.1fms", scope["method"], scope["path"], status,
                (time.perf_counter() - began) * 1000,
                extra={"request_id": request_id},
            )  # fmt: skip


class JsonFormatter(logging.Formatter):
    """One JSON object a line (`--log-format json`): time, level, logger, message, and the
    request id where there is one."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None)
        if request_id:
            entry["request_id"] = request_id
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def metrics_text(state: ServerState) -> tuple[bytes, str]:
    """The Prometheus exposition of the server's state, read at scrape time (one registry per
    app, no global one)."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
    from prometheus_client.exposition import CONTENT_TYPE_LATEST

    class Collector:
        def collect(self) -> Any:
            queued, running = state.worker.counts()
            depth = GaugeMetricFamily(
                "tunesmith_queue_depth", "Jobs queued or running", labels=["state"]
            )
            depth.add_metric(["queued"], queued)
            depth.add_metric(["running"], running)
            yield depth
            jobs = GaugeMetricFamily(
                "tunesmith_jobs", "Jobs in the store by status", labels=["status"]
            )
            for status, count in state.store.counts().items():
                jobs.add_metric([status], count)
            yield jobs
            rate = GaugeMetricFamily(
                "tunesmith_decoder_steps_per_second", "Decoder steps per second (measured)"
            )
            rate.add_metric([], state.worker.steps_per_second or 0.0)
            yield rate
            steps = CounterMetricFamily("tunesmith_decoder_steps", "Decoder steps run")
            steps.add_metric([], state.worker.steps_done)
            yield steps
            seconds = CounterMetricFamily(
                "tunesmith_generation_seconds", "Seconds spent generating and writing"
            )
            seconds.add_metric([], state.worker.generation_seconds)
            yield seconds
            ready = GaugeMetricFamily("tunesmith_ready", "1 when the server takes jobs")
            ready.add_metric([], 0.0 if state.not_ready() else 1.0)
            yield ready

    registry = CollectorRegistry()
    registry.register(Collector())
    return generate_latest(registry), CONTENT_TYPE_LATEST


def docs_assets() -> str | None:
    """Swagger UI's files, installed with the server extras (swagger-ui-bundle)."""
    try:
        import swagger_ui_bundle
    except ImportError:
        return None
    return str(swagger_ui_bundle.swagger_ui_path)

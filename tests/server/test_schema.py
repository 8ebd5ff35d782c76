"""The API document is the truth: schemathesis generates requests from /openapi.json (valid
and invalid ones, a bounded number per operation) and checks every answer against it: no
server error, only documented status codes, bodies and headers as declared, valid requests
accepted and invalid ones refused. In process (ASGI), so nothing leaves this machine; once
without an API key and once with one.

The stateful scenarios follow the document's links (a job's id from POST to its GET, audio,
peaks, spectrogram and DELETE), so requests reach real jobs, not only unknown ids.

The worker is paused: accepted jobs queue (up to max_queue, then a documented 429) and do
not run, so the test's time does not depend on what the generator asks for.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, settings  # noqa: E402

from tunesmith.server import create_app  # noqa: E402

KEY = "schema-test-key"
LOCAL = "http://127.0.0.1"  # the server answers 421 to schemathesis' own `testserver`
EXAMPLES = 25
SCENARIOS = 30  # stateful scenarios per server, each up to STEPS calls
STEPS = 8
# Deliberate exceptions: (operation, check, why).
EXCEPTIONS = [
    (
        "POST /v1/uploads",
        "positive_data_acceptance",
        "the body is any bytes by its schema (binary), but only audio is kept: a PNG or random "
        "bytes are refused with 422, as the document's description and 422 say (a schema "
        "cannot say 'audio')",
    ),
]


def _schema(model: Any, folder: Path, api_key: str | None) -> Any:
    # Failed authentications are not slowed here: the probes would take minutes.
    app = create_app(model, folder, api_key=api_key, max_queue=4, auth_delay_step=0.0)
    worker = app.state.tunesmith.worker
    worker.start()
    worker.pause()

    async def without_lifespan(scope: Any, receive: Any, send: Any) -> None:
        """The app, its lifespan answered here: the test started its worker itself, and a
        client's shutdown must not close the store under the next scenario."""
        if scope["type"] != "lifespan":
            await app(scope, receive, send)
            return
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})

    schema = schemathesis.openapi.from_asgi(
        "/openapi.json", without_lifespan, headers={"Host": "127.0.0.1"}
    )
    schema.tunesmith_state = app.state.tunesmith  # the stateful scenarios empty it
    return schema


def _empty(state: Any) -> None:
    """Cancel and delete every job and upload: each scenario starts from a new server (a
    replayed scenario must meet the server it first met, or hypothesis calls it flaky)."""
    records, _ = state.store.list(10**6, 0)
    for record in records:
        state.worker.cancel(record.id)
        state.store.delete(record.id)
    for path in list(state.store.upload_dir.iterdir()):
        state.store.delete_upload(path.name)


@pytest.fixture(scope="module")
def open_schema(tiny_model: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    return _schema(tiny_model, tmp_path_factory.mktemp("schema-open"), None)


@pytest.fixture(scope="module")
def keyed_schema(tiny_model: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    return _schema(tiny_model, tmp_path_factory.mktemp("schema-keyed"), KEY)


bounded = settings(
    max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
    suppress_health_check=list(HealthCheck),
)  # fmt: skip


def _failures(schema: Any, headers: dict[str, str] | None) -> list[str]:
    """Run every operation's generated cases (valid and invalid); what failed, one line each
    (schemathesis' own message names the check and the case to replay)."""
    from hypothesis import given
    from hypothesis.errors import Unsatisfiable
    from schemathesis.generation import GenerationMode
    from schemathesis.specs.openapi import checks

    failures = []
    for result in schema.get_all_operations():
        operation = result.ok()
        excluded = [
            getattr(checks, name) for label, name, _why in EXCEPTIONS if label == operation.label
        ]
        for mode in GenerationMode:

            @given(case=operation.as_strategy(generation_mode=mode))
            @bounded
            def check(case: Any) -> None:
                # run below, in this same iteration: the loop variable is the current one
                case.call_and_validate(base_url=LOCAL, headers=headers, excluded_checks=excluded)  # noqa: B023

            try:
                check()
            except Unsatisfiable:  # no invalid input exists (a free-form path string)
                continue
            except Exception as err:  # each failing check, reported below all together
                failures.append(f"{operation.label} ({mode.value}): {str(err)[:1500]}")
    return failures


def test_without_a_key_the_server_answers_as_documented(open_schema: Any) -> None:
    failures = _failures(open_schema, None)
    assert not failures, "\n\n".join(failures)


def test_with_a_key_the_server_answers_as_documented(keyed_schema: Any) -> None:
    failures = _failures(keyed_schema, {"X-API-Key": KEY})
    assert not failures, "\n\n".join(failures)


def _stateful_failures(schema: Any, headers: dict[str, str] | None) -> list[str]:
    """Run bounded stateful scenarios along the document's links; what failed."""
    from hypothesis import Phase
    from schemathesis.specs.openapi import checks

    excluded = {
        label: [getattr(checks, name)] for label, name, _why in EXCEPTIONS
    }  # the same deliberate exceptions

    answered: set[tuple[str, int]] = set()

    class Scenarios(schema.as_state_machine()):  # type: ignore[misc]
        def setup(self) -> None:
            _empty(schema.tunesmith_state)

        def after_call(self, response: Any, case: Any) -> None:
            answered.add((case.operation.label, response.status_code))

        def get_call_kwargs(self, case: Any) -> dict[str, Any]:
            return {"base_url": LOCAL, "headers": dict(headers or {})}

        def validate_response(self, response: Any, case: Any, **kwargs: Any) -> None:
            case.validate_response(
                response, excluded_checks=excluded.get(case.operation.label, []),
                transport_kwargs=kwargs,
            )  # fmt: skip

    run = settings(
        max_examples=SCENARIOS, stateful_step_count=STEPS, deadline=None, derandomize=True,
        database=None, suppress_health_check=list(HealthCheck), phases=[Phase.generate],
    )  # fmt: skip
    try:
        Scenarios.run(settings=run)
    except Exception as err:
        return [str(err)[:3000]]
    # The links were followed: real jobs were read and cancelled, not only unknown ids.
    # (Generated upload bodies are random bytes, which are never audio: their 422 ends there.)
    followed = {("GET /v1/generations/{job_id}", 200), ("DELETE /v1/generations/{job_id}", 200)}
    return [f"never reached: {sorted(followed - answered)}"] if followed - answered else []


def test_the_document_has_links_for_stateful_scenarios(open_schema: Any) -> None:
    raw = open_schema.raw_schema["paths"]
    created = raw["/v1/generations"]["post"]["responses"]["202"]["links"]
    assert {"GetGeneration", "DeleteGeneration", "GetAudio"} <= set(created)
    assert "GetUpload" in raw["/v1/uploads"]["post"]["responses"]["201"]["links"]


def test_stateful_scenarios_without_a_key_answer_as_documented(open_schema: Any) -> None:
    failures = _stateful_failures(open_schema, None)
    assert not failures, "\n\n".join(failures)


def test_stateful_scenarios_with_a_key_answer_as_documented(keyed_schema: Any) -> None:
    failures = _stateful_failures(keyed_schema, {"X-API-Key": KEY})
    assert not failures, "\n\n".join(failures)

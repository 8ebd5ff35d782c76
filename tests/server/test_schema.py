"""The API document is the truth: schemathesis generates requests from /openapi.json (valid
and invalid ones, a bounded number per operation) and checks every answer against it: no
server error, only documented status codes, bodies and headers as declared, valid requests
accepted and invalid ones refused. In process (ASGI), so nothing leaves this machine; once
without an API key and once with one.

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
EXAMPLES = 25
# Deliberate exceptions: (operation, check, why).
EXCEPTIONS = [
    (
        "POST /v1/uploads",
        "positive_data_acceptance",
        "the body is any bytes by its schema (binary), but only audio is kept: a PNG or random "
        "bytes are refused with 422, which the document cannot express",
    ),
]


def _schema(model: Any, folder: Path, api_key: str | None) -> Any:
    # Failed authentications are not slowed here: the probes would take minutes.
    app = create_app(model, folder, api_key=api_key, max_queue=4, auth_delay_step=0.0)
    worker = app.state.tunesmith.worker
    worker.start()
    worker.pause()
    return schemathesis.openapi.from_asgi("/openapi.json", app)


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
                case.call_and_validate(headers=headers, excluded_checks=excluded)  # noqa: B023

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

"""Schemathesis fuzzes the API from its own OpenAPI schema: valid and invalid requests to every route,
in process (ASGI), against the real Redis of tests/service/conftest.py and the shipped generator
cards (generators/). Every response must be free of server errors and conform to the schema:
documented status, content type, body schema and headers; invalid requests must be rejected.

It runs twice: with API keys (the schema declares bearer auth) and without (open access, the
embedded default: the schema declares none). Schemathesis generates JSON only, so bodies holding
what Python's JSON reader also takes (NaN, Infinity, -Infinity, 1e400) and integers written as
floats (2.0, 1e2) are made here, from its valid bodies. No worker runs: the jobs fuzzing submits stay
queued on this test's own queue; a worker is only registered, so that /readyz answers 200 (its 503
without a worker is by design, and would count as a server error).
"""

import json
import uuid
from collections import Counter
from pathlib import Path

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from rq import Queue, Worker
from schemathesis import Case, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from service.queue import SERIALIZER
from service.settings import Settings
from tests.service.stack import app_for

GENERATORS = Path(__file__).resolve().parents[2] / "generators"
INSTALLED = ["mlp-digits", "mlp-fashion"]
KEY, OTHER_KEY = "fuzzing-key", "someone-elses-key"
LIMIT = 1000  # max_count and max_steps
# per key mode: about 12 s here
POSITIVE_EXAMPLES, NEGATIVE_EXAMPLES, STRANGE_NUMBER_EXAMPLES = 450, 300, 150
NON_FINITE = ["NaN", "Infinity", "-Infinity", "1e400", "-1e999"]  # JSON cannot hold them; Python reads them
WHOLE_FLOATS = ["1.0", "2.0", "1e2", "20.0", "7E0", "-0.0", "0.0"]  # integers to JSON Schema
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
    negative_data_rejection,
]
# Invalid requests may also be rejected as too large (413): the body limit applies before parsing.
REJECTIONS = [400, 401, 403, 404, 405, 406, 409, 413, 415, 422, 428, 429]
CONFIG = schemathesis.Config.from_dict(
    {"checks": {"negative_data_rejection": {"expected-statuses": REJECTIONS}}}
)
# Not checked: positive_data_acceptance. The schema cannot say which architectures are installed or
# what the configured count/steps maxima are, so schema-valid bodies can rightly be 422.


@st.composite
def aimed(draw: st.DrawFn, cases: st.SearchStrategy[Case], job_ids: list[str]) -> Case:
    """Valid cases sent with the valid key, if any (schemathesis would draw random bearer tokens: 401s),
    half of them aimed at what random data rarely hits: an installed architecture in POST /generate, an
    existing job (the caller's own, or another key's) in the /jobs routes."""
    case = draw(cases)
    if case.headers is not None and "Authorization" in case.headers:
        case.headers["Authorization"] = bearer(KEY)["Authorization"]
    if draw(st.booleans()):
        if case.path_parameters and "job_id" in case.path_parameters:
            case.path_parameters["job_id"] = draw(st.sampled_from(job_ids))
        elif case.operation.path == "/generate" and isinstance(case.body, dict):
            case.body["architecture"] = draw(st.sampled_from(INSTALLED))
            for field in ("count", "steps"):  # within the configured maxima, which the schema cannot say
                if isinstance(case.body.get(field), int):
                    case.body[field] = draw(st.integers(1, LIMIT))
    return case


@st.composite
def strange_numbers(draw: st.DrawFn, cases: st.SearchStrategy[Case]) -> tuple[Case, str]:
    """A valid POST /generate case whose JSON body gets a number schemathesis never writes: a
    non-finite one (for a field's value, an unknown field's, a nested value's or the whole body's),
    or an integer written as a float (for an integer field); with which of the two it is."""
    case = draw(cases)
    body = dict(case.body) if isinstance(case.body, dict) else {"architecture": "mlp-digits", "count": 1}
    marker = "__NUMBER__"
    if draw(st.booleans()):
        number, kind = draw(st.sampled_from(NON_FINITE)), "non-finite"
        where = draw(
            st.sampled_from(["count", "seed", "steps", "architecture", "sampler", "extra", "nested", "body"])
        )
        if where == "body":
            body = marker
        elif where == "extra":
            body[draw(st.text("abcxyz_", min_size=1, max_size=8)) + "_"] = marker
        elif where == "nested":
            body[draw(st.sampled_from(["count", "seed", "colour"]))] = [1, {"value": marker}]
        else:
            body[where] = marker
    else:
        number, kind = draw(st.sampled_from(WHOLE_FLOATS)), "whole float"
        body[draw(st.sampled_from(["count", "seed", "steps"]))] = marker
    case.body = json.dumps(body).replace(f'"{marker}"', number).encode()
    case.media_type = "application/json"
    case.headers = {**(case.headers or {}), "Content-Type": "application/json"}
    if case.headers.get("Authorization"):
        case.headers["Authorization"] = bearer(KEY)["Authorization"]
    return case, kind


@pytest.mark.parametrize("keys", [[KEY, OTHER_KEY], []], ids=["keys", "open"])
def test_fuzzing_finds_no_server_error_and_no_schema_violation(
    settings: Settings, queue: Queue, keys: list[str]
) -> None:
    assert all((GENERATORS / name / "card.json").is_file() for name in INSTALLED), f"no cards in {GENERATORS}"
    # long polls (GET /jobs/{id}?wait=) answer at once: the fuzzer would otherwise wait on every one
    limits = {"max_count": LIMIT, "max_steps": LIMIT, "long_poll_max_s": 0.0}
    app = app_for(settings.model_copy(update={"generators_dir": GENERATORS, "api_keys": keys, **limits}))
    headers = bearer(KEY) if keys else {}
    with TestClient(app) as api:  # jobs for the fuzzed /jobs routes to find: two of the key's, one not
        job_ids = [
            api.post(
                "/generate",
                json={"architecture": "mlp-digits", "count": 1},
                headers=bearer(key) if keys else {},
            ).json()["id"]
            for key in (KEY, KEY, OTHER_KEY)
        ]
    schema = schemathesis.openapi.from_asgi("/openapi.json", app, config=CONFIG)
    assert ("securitySchemes" in schema.raw_schema.get("components", {})) == bool(keys)
    outcomes: Counter[str] = Counter()

    def fuzz(cases: st.SearchStrategy[Case] | st.SearchStrategy[tuple[Case, str]], examples: int) -> None:
        @given(drawn=cases)
        @hypothesis_settings(
            max_examples=examples, deadline=None, database=None, suppress_health_check=list(HealthCheck)
        )
        def run(drawn: Case | tuple[Case, str]) -> None:
            case, mode = drawn if isinstance(drawn, tuple) else (drawn, None)
            # schemathesis validates bodies with draft-4 `integer` (1.0 is not one); JSON Schema 2020-12,
            # which OpenAPI 3.1 uses, counts 1.0 as an integer: whole floats are checked below instead
            checks = (
                [c for c in CHECKS if c is not negative_data_rejection] if mode == "whole float" else CHECKS
            )
            response = case.call_and_validate(headers=headers, checks=checks)
            mode = mode or (case.meta.generation.mode.value if case.meta else "?")
            if mode == "whole float" and response.status_code == 422:  # out of range, never a type error
                assert "whole number" not in response.text and "integer" not in response.text, response.text
            if mode == "non-finite":  # never a number JSON cannot hold: rejected as invalid, naming where
                assert response.status_code in {401, 413, 422, 429}, response.text
                if response.status_code == 422:
                    assert response.json()["errors"] and "NaN" not in response.text
            outcomes[f"{case.method} {case.operation.path} {response.status_code} ({mode})"] += 1

        run()

    worker = Worker([queue], connection=queue.connection, serializer=SERIALIZER, name=uuid.uuid4().hex)
    worker.register_birth()
    try:
        fuzz(aimed(schema.as_strategy(GenerationMode.POSITIVE), job_ids), POSITIVE_EXAMPLES)
        fuzz(schema.as_strategy(GenerationMode.NEGATIVE), NEGATIVE_EXAMPLES)
        generate = schema["/generate"]["POST"].as_strategy(GenerationMode.POSITIVE)
        fuzz(strange_numbers(aimed(generate, job_ids)), STRANGE_NUMBER_EXAMPLES)
    finally:
        worker.register_death()
    print(f"schemathesis ran {sum(outcomes.values())} cases ({'keys' if keys else 'open access'}):")
    for outcome, count in sorted(outcomes.items()):
        print(f"  {outcome}: {count}")
    # the fuzzing went past validation and authorization: jobs enqueued (they stay queued), read, refused
    reached = {outcome.rsplit(" (", 1)[0] for outcome in outcomes}
    expected = {
        "POST /generate 202",
        "POST /generate 422",
        "GET /jobs/{job_id} 200",
        "GET /jobs/{job_id} 404",
        "GET /jobs/{job_id}/weights 409",
        "DELETE /jobs/{job_id} 404",
        "GET /architectures 200",
    }
    if keys:
        expected |= {"POST /generate 401", "GET /jobs/{job_id} 403"}
    else:
        assert not any(outcome.split(" (")[0].endswith((" 401", " 403")) for outcome in outcomes)
    assert reached >= expected
    assert any(outcome.endswith("(non-finite)") for outcome in outcomes)
    assert any(outcome.endswith("(whole float)") for outcome in outcomes)
    assert sum(outcomes.values()) >= (POSITIVE_EXAMPLES + NEGATIVE_EXAMPLES + STRANGE_NUMBER_EXAMPLES) / 2


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_a_content_length_that_is_not_a_number_is_no_claim_of_size(api: TestClient) -> None:
    """Found by fuzzing: `Content-Length:` (empty) was answered 413 on any route; the limit now applies
    to the bytes actually sent."""
    assert api.get("/jobs/0123456789abcdef", headers={"Content-Length": ""}).status_code == 404
    response = api.post("/generate", content=b"{" + b" " * 2000 + b"}", headers={"Content-Length": "x"})
    assert response.status_code == 413


@pytest.mark.parametrize("keys", [[], [KEY]], ids=["open", "keys"])
def test_every_error_response_is_documented_as_a_problem(settings: Settings, keys: list[str]) -> None:
    """Found by fuzzing: errors were documented as application/json, and 401 was missing on some routes.
    Found by a user: without API keys the schema still declared bearer auth (and 401) on every job route."""
    with TestClient(app_for(settings.model_copy(update={"api_keys": keys, "long_poll_max_s": 0.0}))) as api:
        schema = api.get("/openapi.json").json()
    assert ("securitySchemes" in schema.get("components", {})) == bool(keys)
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            for status, response in operation["responses"].items():
                if status[0] in "45":
                    assert list(response["content"]) == ["application/problem+json"], (method, path, status)
            guarded = path not in {"/healthz", "/readyz", "/metrics"}
            assert ("401" in operation["responses"]) == (guarded and bool(keys)), (method, path)
            assert ("security" in operation) == (guarded and bool(keys)), (method, path)

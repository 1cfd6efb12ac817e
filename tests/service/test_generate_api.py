"""POST /generate: 202 with a job resource and Location, defaults resolved, and every bad input a 422."""

import json
import socket

import pytest
from fastapi.testclient import TestClient
from rq import Queue
from rq.job import Job

from contract.jobs import JOB_FUNCTION
from service.queue import SERIALIZER
from service.settings import Settings
from tests.service.stack import app_for, serve_in_thread

PROBLEM = "application/problem+json"


def test_accepts_and_enqueues_the_resolved_request(api: TestClient, queue: Queue) -> None:
    response = api.post("/generate", json={"architecture": "mlp-digits", "count": 5, "seed": 7})
    assert response.status_code == 202
    body = response.json()
    assert response.headers["location"] == f"/jobs/{body['id']}" == body["url"]
    assert body["status"] == "queued"
    assert body["request"] == {
        "architecture": "mlp-digits",
        "count": 5,
        "seed": 7,
        "sampler": "rk4",
        "steps": 20,
        "validation": False,
    }
    assert body["progress"] == {"done": 0, "total": None}
    assert body["result"] is None and body["result_url"] is None and body["enqueued_at"]

    assert queue.job_ids == [body["id"]]
    job = Job.fetch(body["id"], connection=queue.connection, serializer=SERIALIZER)
    assert job.func_name == JOB_FUNCTION
    assert job.kwargs == {"request": body["request"]}  # the one argument of the typed contract


def test_chooses_and_echoes_a_seed_when_absent(api: TestClient) -> None:
    seeds = {api.post("/generate", json={"architecture": "mlp-digits", "count": 1}).json()["request"]["seed"]}
    seeds.add(
        api.post("/generate", json={"architecture": "mlp-digits", "count": 1}).json()["request"]["seed"]
    )
    assert all(isinstance(s, int) and 0 <= s < 2**32 for s in seeds)
    assert len(seeds) == 2  # chosen afresh (a collision has probability 2**-32)


def test_explicit_sampler_and_steps_override_the_card(api: TestClient) -> None:
    body = {"architecture": "mlp-fashion", "count": 2, "seed": 0, "sampler": "euler", "steps": 50}
    request = api.post("/generate", json=body).json()["request"]
    assert (request["sampler"], request["steps"]) == ("euler", 50)


def test_validation_accuracy_is_measured_only_when_asked(api: TestClient) -> None:
    body = {"architecture": "mlp-digits", "count": 2, "validation": True}
    assert api.post("/generate", json=body).json()["request"]["validation"] is True


def _problem(response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    problem = response.json()
    assert problem["status"] == status and problem["title"] and problem["instance"] == "/generate"
    return problem


def test_unknown_architecture_is_422_listing_the_valid_ones(api: TestClient, queue: Queue) -> None:
    problem = _problem(api.post("/generate", json={"architecture": "gpt-5", "count": 1}), 422)
    assert problem["errors"][0]["loc"] == ["body", "architecture"]
    assert "mlp-digits" in problem["detail"] and "mlp-fashion" in problem["detail"]
    assert ".half-written" not in problem["detail"]
    assert queue.count == 0


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("count", 0),
        ("count", -3),
        ("count", 51),  # max_count is 50 in these tests
        ("count", 2.5),
        ("count", "5"),
        ("seed", "12"),
        ("seed", 1.5),
        ("seed", True),
        ("seed", -1),
        ("seed", 2**32),
        ("sampler", "leapfrog"),
        ("steps", 0),
        ("steps", 201),  # max_steps is 200
        ("validation", "yes"),
        ("validation", 1),  # a JSON boolean, not a number
    ],
)
def test_bad_field_is_422_naming_it(api: TestClient, queue: Queue, field: str, value: object) -> None:
    body = {"architecture": "mlp-digits", "count": 3, field: value}
    problem = _problem(api.post("/generate", json=body), 422)
    assert [e["loc"] for e in problem["errors"]] == [["body", field]]
    assert field in problem["detail"]
    assert queue.count == 0


def test_missing_and_unknown_fields_are_422(api: TestClient) -> None:
    problem = _problem(api.post("/generate", json={"architecture": "mlp-digits"}), 422)
    assert ["body", "count"] in [e["loc"] for e in problem["errors"]]
    problem = _problem(
        api.post("/generate", json={"architecture": "mlp-digits", "count": 1, "colour": 1}), 422
    )
    assert ["body", "colour"] in [e["loc"] for e in problem["errors"]]


def test_malformed_json_is_422(api: TestClient) -> None:
    response = api.post(
        "/generate",
        content=b'{"architecture": "mlp-digits", "count": ',
        headers={"content-type": "application/json"},
    )
    problem = _problem(response, 422)
    assert problem["errors"][0]["type"] == "json_invalid"


def test_oversized_body_is_413_before_parsing(api: TestClient, queue: Queue) -> None:
    padding = "x" * 2000  # max_body_bytes is 1024 in these tests
    problem = _problem(
        api.post("/generate", json={"architecture": "mlp-digits", "count": 1, "pad": padding}), 413
    )
    assert "1024" in problem["detail"]

    def chunks():  # no Content-Length: the limit applies while the body streams in
        yield b'{"architecture": "mlp-digits", "count": 1, "pad": "'
        yield padding.encode()
        yield b'"}'

    _problem(api.post("/generate", content=chunks(), headers={"content-type": "application/json"}), 413)
    assert queue.count == 0


NON_FINITE = ["NaN", "Infinity", "-Infinity", "1e400", "-1e400"]  # Python's JSON reader takes them all


@pytest.mark.parametrize("number", NON_FINITE)
@pytest.mark.parametrize(
    ("template", "field"),
    [
        ('{"architecture": "mlp-digits", "count": %s}', "count"),
        ('{"architecture": "mlp-digits", "count": 1, "seed": %s}', "seed"),
        ('{"architecture": "mlp-digits", "count": 1, "steps": %s}', "steps"),
        ('{"architecture": %s, "count": 1}', "architecture"),
        ('{"architecture": "mlp-digits", "count": 1, "colour": %s}', "colour"),
        ('{"architecture": "mlp-digits", "count": 1, "colour": [1, {"deep": %s}]}', "colour"),
        ("%s", None),
    ],
)
def test_non_finite_numbers_are_422_naming_the_field(
    api: TestClient, queue: Queue, template: str, field: str | None, number: str
) -> None:
    """Found by a user: NaN, Infinity or 1e400 anywhere in the body was echoed into the problem,
    which then could not be encoded as JSON: 500. The input is not echoed for those."""
    response = api.post(
        "/generate", content=(template % number).encode(), headers={"content-type": "application/json"}
    )
    problem = _problem(response, 422)
    locs = [e["loc"] for e in problem["errors"]]
    assert (["body", field] if field else ["body"]) in locs
    assert field is None or field in problem["detail"]
    where = ["body", field] if field else ["body"]
    assert all("input" not in e for e in problem["errors"] if e["loc"] == where)
    assert queue.count == 0


def test_an_echoed_input_is_kept_when_it_is_finite(api: TestClient) -> None:
    problem = _problem(api.post("/generate", json={"architecture": "mlp-digits", "count": 2.5}), 422)
    assert [(e["loc"], e["input"]) for e in problem["errors"]] == [(["body", "count"], 2.5)]


def test_whole_number_floats_are_integers(api: TestClient) -> None:
    """JSON Schema's `integer` includes 2.0 (and a fuzzer sends it): accepted as 2."""
    body = {"architecture": "mlp-digits", "count": 2.0, "seed": 7.0, "steps": 3.0}
    response = api.post("/generate", json=body)
    assert response.status_code == 202, response.text
    assert response.json()["request"] | {"sampler": None} == {
        "architecture": "mlp-digits",
        "count": 2,
        "seed": 7,
        "sampler": None,
        "steps": 3,
        "validation": False,
    }


@pytest.mark.parametrize("declared", [10, 41])  # the body below is 42 bytes
def test_a_content_length_smaller_than_the_body_is_400_problem(settings: Settings, declared: int) -> None:
    """Found by a user: uvicorn answered `400 text/plain` (the bytes past the Content-Length read as a
    second, malformed request). Over real HTTP: the API's uvicorn protocol answers problem details."""
    body = b'{"architecture": "mlp-digits", "count": 1}'
    with serve_in_thread(app_for(settings)) as url:
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=5) as connection:
            head = ["POST /generate HTTP/1.1", "Host: x", "Content-Type: application/json"]
            head.append(f"Content-Length: {declared}")
            connection.sendall("\r\n".join(head).encode() + b"\r\n\r\n" + body)
            answer = b""
            while chunk := connection.recv(65536):
                answer += chunk
    status, _, rest = answer.partition(b"\r\n")
    headers, _, content = rest.partition(b"\r\n\r\n")
    assert status == b"HTTP/1.1 400 Bad Request"
    assert f"content-type: {PROBLEM}".encode() in headers.lower()
    problem = json.loads(content)
    assert problem["status"] == 400 and "Content-Length" in problem["detail"]

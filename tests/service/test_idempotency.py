"""Idempotency-Key on POST /generate, against the real Redis of tests/service/conftest.py: replays give
the same job (200, Idempotent-Replayed), another body is 422, bad keys are 422, keys are scoped per
API key, and concurrent identical requests make exactly one job (over real HTTP, and in a forced race)."""

import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from fastapi.testclient import TestClient
from redis.client import Pipeline
from rq import Queue
from rq.job import Job

from contract.jobs import JobRequest
from service.auth import ANONYMOUS
from service.idempotency import IdempotentSubmission
from service.queue import enqueue_generation, fetch_job
from service.ratelimit import queued_key
from service.schemas import GenerateRequest
from service.settings import Settings
from tests.service.stack import app_for, serve_in_thread

PROBLEM = "application/problem+json"
UNSEEDED = {"architecture": "mlp-digits", "count": 2}


def key(value: str) -> dict[str, str]:
    return {"Idempotency-Key": value}


def test_a_replay_answers_200_with_the_same_job_and_seed(api: TestClient, queue: Queue) -> None:
    first = api.post("/generate", json=UNSEEDED, headers=key("order-1"))
    assert first.status_code == 202 and "idempotent-replayed" not in first.headers
    job = first.json()
    # the same request, spelled differently: the hash is over the parsed body, not its bytes
    for body in (UNSEEDED, {"count": 2, "architecture": "mlp-digits", "seed": None, "steps": None}):
        again = api.post("/generate", json=body, headers=key("order-1"))
        assert again.status_code == 200, again.text
        assert again.headers["idempotent-replayed"] == "true"
        assert again.headers["location"] == first.headers["location"] == f"/jobs/{job['id']}"
        assert again.json()["id"] == job["id"]
        assert again.json()["request"]["seed"] == job["request"]["seed"]  # the random seed of the first
    assert queue.job_ids == [job["id"]]

    other = api.post("/generate", json=UNSEEDED, headers=key("order-2"))
    assert other.status_code == 202 and other.json()["id"] != job["id"]
    plain = api.post("/generate", json=UNSEEDED)  # no key: a new job every time
    assert plain.status_code == 202 and len(queue.job_ids) == 3


def test_a_replay_still_finds_the_job_after_it_ended(api: TestClient) -> None:
    job_id = api.post("/generate", json=UNSEEDED, headers=key("k")).json()["id"]
    assert api.delete(f"/jobs/{job_id}").json()["status"] == "canceled"
    again = api.post("/generate", json=UNSEEDED, headers=key("k"))
    assert again.status_code == 200
    assert (again.json()["id"], again.json()["status"]) == (job_id, "canceled")


def test_the_record_lives_as_long_as_a_job_record(api: TestClient, queue: Queue, settings: Settings) -> None:
    api.post("/generate", json=UNSEEDED, headers=key("ttl-check"))
    record = f"dwf:{queue.name}:idempotency:{ANONYMOUS}:ttl-check"
    assert settings.job_ttl - 5 <= queue.connection.ttl(record) <= settings.job_ttl


def test_the_same_key_with_another_body_is_422(api: TestClient, queue: Queue) -> None:
    first = api.post("/generate", json=UNSEEDED, headers=key("k1"))
    for body in (
        {**UNSEEDED, "count": 3},
        {**UNSEEDED, "seed": 5},
        {"architecture": "mlp-fashion", "count": 2},
    ):
        response = api.post("/generate", json=body, headers=key("k1"))
        assert response.status_code == 422
        assert response.headers["content-type"] == PROBLEM
        problem = response.json()
        assert problem["type"] == "/problems/idempotency-key-reused"
        assert "Idempotency-Key" in problem["detail"] and "different request body" in problem["detail"]
    assert queue.job_ids == [first.json()["id"]]


@pytest.mark.parametrize(
    "value",
    ["x" * 256, "caf\xe9", "tab\tinside", "bell\x07", ""],
)
def test_a_malformed_key_is_422_naming_the_header(api: TestClient, queue: Queue, value: str) -> None:
    response = api.post("/generate", json=UNSEEDED, headers={"Idempotency-Key": value.encode("latin-1")})
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == PROBLEM
    assert response.json()["errors"][0]["loc"] == ["header", "Idempotency-Key"]
    assert "Idempotency-Key" in response.json()["detail"]
    assert queue.count == 0


def test_the_longest_and_oddest_valid_keys_are_accepted(api: TestClient) -> None:
    for value in ("x" * 255, "~!@# spaces inside are fine $%^&*()"):
        assert api.post("/generate", json=UNSEEDED, headers=key(value)).status_code == 202
        assert api.post("/generate", json=UNSEEDED, headers=key(value)).status_code == 200


def test_keys_are_scoped_per_api_key(settings: Settings, queue: Queue) -> None:
    keyed = settings.model_copy(update={"api_keys": ["alice", "bob"]})
    with TestClient(app_for(keyed)) as api:
        alice = api.post("/generate", json=UNSEEDED, headers={**key("k"), "Authorization": "Bearer alice"})
        bob = api.post("/generate", json=UNSEEDED, headers={**key("k"), "Authorization": "Bearer bob"})
        assert (alice.status_code, bob.status_code) == (202, 202)
        assert alice.json()["id"] != bob.json()["id"]
        # bob's "k" is his own: another body under it is a conflict with his request, not alice's
        bob_again = api.post("/generate", json=UNSEEDED, headers={**key("k"), "Authorization": "Bearer bob"})
        assert bob_again.status_code == 200 and bob_again.json()["id"] == bob.json()["id"]
    assert len(queue.job_ids) == 2


def test_concurrent_identical_requests_make_one_job(settings: Settings, queue: Queue) -> None:
    """Over real HTTP, many threads send the same key and body at once: one 202, the rest 200, one job."""
    threads = 16
    start = threading.Barrier(threads)

    def submit(url: str) -> httpx.Response:
        start.wait()
        return httpx.post(f"{url}/generate", json=UNSEEDED, headers=key("race"), timeout=30)

    with serve_in_thread(app_for(settings)) as url, ThreadPoolExecutor(threads) as pool:
        responses = list(pool.map(submit, [url] * threads))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] * (threads - 1) + [202], [r.text for r in responses if r.status_code >= 300]
    assert len({r.json()["id"] for r in responses}) == 1
    assert len({r.json()["request"]["seed"] for r in responses}) == 1
    assert queue.job_ids == [responses[0].json()["id"]]
    # the losers gave back the places they had reserved among the caller's unfinished jobs
    assert queue.connection.zrange(queued_key(queue, ANONYMOUS), 0, -1) == [queue.job_ids[0].encode()]


def _submission(queue: Queue, settings: Settings, body: dict = UNSEEDED) -> IdempotentSubmission:
    return IdempotentSubmission(queue, ANONYMOUS, "interleaved", GenerateRequest(**body), settings.job_ttl)


def _request(seed: int) -> JobRequest:
    return JobRequest(architecture="mlp-digits", count=2, seed=seed, sampler="rk4", steps=20)


def test_a_request_that_loses_the_race_enqueues_nothing(queue: Queue, settings: Settings) -> None:
    """Two requests both find no record; the second commits while the first is inside its transaction:
    the first's transaction aborts (WATCH), leaving no job of its own, and it finds the winner's job."""
    loser, winner = _submission(queue, settings), _submission(queue, settings)
    assert loser.previous_job() is None and winner.previous_job() is None
    won: list[Job] = []

    def enqueue_while_the_winner_commits(pipeline: Pipeline) -> Job:
        job = enqueue_generation(queue, _request(1), settings, ANONYMOUS, "loser-job", pipeline)
        won.append(
            winner.commit(
                "winner-job",
                lambda p: enqueue_generation(queue, _request(2), settings, ANONYMOUS, "winner-job", p),
            )
        )
        return job

    assert loser.commit("loser-job", enqueue_while_the_winner_commits) is None
    assert won[0] is not None and won[0].id == "winner-job"
    assert queue.job_ids == ["winner-job"]
    assert fetch_job(queue, "loser-job") is None
    assert loser.previous_job().id == "winner-job"
    # once a record exists, a commit does not even start a transaction
    assert _submission(queue, settings).commit("third-job", lambda p: pytest.fail("enqueued")) is None

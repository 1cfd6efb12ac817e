"""Reading a job whose worker died settles it: GET /jobs/<id>, GET /jobs/<id>/weights and
DELETE /jobs/<id> each run `recover_abandoned_jobs` for a `started` job first, so the job does not
stay `started` when no worker is left to do it (`dwf serve`'s one worker killed).

The dead worker is simulated here with rq's own bookkeeping (an execution in the started registry
whose heartbeat lapsed); tests/e2e/test_abandoned_job_on_read.py SIGKILLs a real worker process.
"""

import time
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from rq import Queue
from rq.executions import Execution
from rq.job import Job

from service.queue import SERIALIZER
from service.settings import Settings
from tests.service.stack import app_for

GHOST = "ghost-worker-1"


def _submit(api: TestClient) -> str:
    response = api.post("/generate", json={"architecture": "mlp-digits", "count": 2, "seed": 3})
    assert response.status_code == 202, response.text
    return response.json()["id"]


def _start(queue: Queue, job_id: str, heartbeat_expires_in: float) -> None:
    """What a worker named GHOST does when it takes the job (take it off the queue, mark it started,
    register its execution), with the execution's heartbeat expiring `heartbeat_expires_in` s from
    now (negative: it lapsed, as when the worker was killed)."""
    job = Job.fetch(job_id, connection=queue.connection, serializer=SERIALIZER)
    queue.remove(job)
    with queue.connection.pipeline() as pipeline:
        execution = Execution.create(job, ttl=60, pipeline=pipeline, worker_name=GHOST)
        job.prepare_for_execution(GHOST, pipeline=pipeline)
        pipeline.execute()
    expires_at = time.time() + heartbeat_expires_in
    assert (
        queue.connection.zadd(
            queue.started_job_registry.key, {execution.composite_key: expires_at}, xx=True, ch=True
        )
        == 1
    )


def _status(queue: Queue, job_id: str) -> str:
    """The job's status in Redis, without asking the API (which might settle it)."""
    return Job.fetch(job_id, connection=queue.connection, serializer=SERIALIZER).get_status().value


def _died(error: str) -> bool:
    return error.startswith(f"WorkerDied: worker {GHOST} died while running this job (no heartbeat for 7 s")


@pytest.fixture
def dead_worker_api(settings: Settings) -> Iterator[TestClient]:
    with TestClient(app_for(settings.model_copy(update={"job_heartbeat_ttl": 7}))) as api:
        yield api


def test_get_job_fails_a_job_whose_worker_died(dead_worker_api: TestClient, queue: Queue) -> None:
    job_id = _submit(dead_worker_api)
    _start(queue, job_id, heartbeat_expires_in=-1)
    assert _status(queue, job_id) == "started"
    body = dead_worker_api.get(f"/jobs/{job_id}").json()
    assert body["status"] == "failed" and _died(body["error"]), body
    assert body["ended_at"] is not None
    assert queue.connection.zcard(queue.started_job_registry.key) == 0
    assert job_id in queue.failed_job_registry.get_job_ids()


def test_get_weights_settles_it_first_and_answers_409_for_good(
    dead_worker_api: TestClient, queue: Queue
) -> None:
    job_id = _submit(dead_worker_api)
    _start(queue, job_id, heartbeat_expires_in=-1)
    response = dead_worker_api.get(f"/jobs/{job_id}/weights")
    assert response.status_code == 409 and "is failed" in response.json()["detail"]
    assert "retry-after" not in response.headers  # ended: no point retrying
    assert _status(queue, job_id) == "failed"


def test_delete_settles_it_first_and_answers_409(dead_worker_api: TestClient, queue: Queue) -> None:
    job_id = _submit(dead_worker_api)
    _start(queue, job_id, heartbeat_expires_in=-1)
    response = dead_worker_api.delete(f"/jobs/{job_id}")
    assert response.status_code == 409 and "already ended (failed)" in response.json()["detail"]
    assert _status(queue, job_id) == "failed"


def test_a_job_with_a_live_heartbeat_stays_started(dead_worker_api: TestClient, queue: Queue) -> None:
    job_id = _submit(dead_worker_api)
    _start(queue, job_id, heartbeat_expires_in=30)
    body = dead_worker_api.get(f"/jobs/{job_id}").json()
    assert body["status"] == "started" and body["error"] is None
    assert dead_worker_api.get(f"/jobs/{job_id}/weights").headers["retry-after"] == "1"
    assert _status(queue, job_id) == "started"
    assert queue.connection.zcard(queue.started_job_registry.key) == 1


def test_with_retries_left_reading_it_queues_it_again(settings: Settings, queue: Queue) -> None:
    with TestClient(app_for(settings.model_copy(update={"job_retries": 1}))) as api:
        job_id = _submit(api)
        _start(queue, job_id, heartbeat_expires_in=-1)
        body = api.get(f"/jobs/{job_id}").json()
    assert body["status"] == "queued" and body["error"] is None
    assert queue.job_ids == [job_id]
    assert Job.fetch(job_id, connection=queue.connection, serializer=SERIALIZER).meta["worker_deaths"] == 1


def test_the_retry_budget_is_the_one_set_when_the_job_was_submitted(settings: Settings, queue: Queue) -> None:
    """An API (or worker) with other settings settles the job by the budget it was submitted with."""
    with TestClient(app_for(settings.model_copy(update={"job_retries": 1}))) as submitting_api:
        job_id = _submit(submitting_api)
    with TestClient(app_for(settings.model_copy(update={"job_retries": 0}))) as reading_api:
        _start(queue, job_id, heartbeat_expires_in=-1)
        assert reading_api.get(f"/jobs/{job_id}").json()["status"] == "queued"
        _start(queue, job_id, heartbeat_expires_in=-1)
        body = reading_api.get(f"/jobs/{job_id}").json()
    assert body["status"] == "failed" and "WorkerDied" in body["error"]

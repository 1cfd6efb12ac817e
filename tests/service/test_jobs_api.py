"""GET /jobs/{id}, GET /jobs/{id}/weights and DELETE /jobs/{id} against jobs in a real Redis.

No worker runs here: a job is moved to `finished` the way a worker would record it
(rq's status plus the result summary in job.meta); tests/e2e runs the real worker.
"""

import threading
import time
from pathlib import Path

from fastapi.testclient import TestClient
from rq import Queue
from rq.job import Job, JobStatus

from contract.jobs import JobSummary
from contract.result_file import ResultMetadata
from service.queue import SERIALIZER
from service.settings import Settings
from service.storage import result_path
from tests.service.stack import app_for

PROBLEM = "application/problem+json"


def _submit(api: TestClient) -> str:
    response = api.post("/generate", json={"architecture": "mlp-digits", "count": 4, "seed": 1})
    assert response.status_code == 202
    return response.json()["id"]


def _finish(queue: Queue, settings: Settings, job_id: str, expires_in: float) -> bytes:
    """Record `job_id` as finished with a result file, as the worker does."""
    content = b"not really safetensors, but the API only streams bytes"
    path = result_path(settings.results_dir, job_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    job = Job.fetch(job_id, connection=queue.connection, serializer=SERIALIZER)
    job.meta["progress"] = {"done": 4, "total": 4}
    metadata = ResultMetadata(
        job_id=job_id,
        architecture="mlp-digits",
        generator_version="2",
        count=4,
        seed=1,
        sampler="rk4",
        steps=20,
        val_accuracy=[0.5, 0.75, 1.0, 0.25],
    )
    summary = JobSummary(metadata=metadata, size_bytes=len(content), expires_at=time.time() + expires_in)
    job.meta["result"] = summary.model_dump(mode="json")
    job.save_meta()
    job.set_status(JobStatus.FINISHED)
    return content


def test_unknown_job_is_404_problem(api: TestClient) -> None:
    for path in ("/jobs/0123456789abcdef", "/jobs/not a job id!", "/jobs/0123456789abcdef/weights"):
        response = api.get(path)
        assert response.status_code == 404
        assert response.headers["content-type"] == PROBLEM
        assert response.json()["type"] == "/problems/job-not-found"
    assert api.delete("/jobs/0123456789abcdef").status_code == 404


def test_queued_job_status_and_weights_409(api: TestClient) -> None:
    job_id = _submit(api)
    body = api.get(f"/jobs/{job_id}").json()
    assert body["status"] == "queued" and body["id"] == job_id
    assert body["progress"] == {"done": 0, "total": None}
    assert body["error"] is None and body["started_at"] is None and body["ended_at"] is None

    response = api.get(f"/jobs/{job_id}/weights")
    assert response.status_code == 409
    assert response.headers["content-type"] == PROBLEM
    assert response.headers["retry-after"] == "1"
    assert "queued" in response.json()["detail"]


def test_finished_job_streams_its_weights(api: TestClient, queue: Queue, settings: Settings) -> None:
    job_id = _submit(api)
    content = _finish(queue, settings, job_id, expires_in=3600)
    body = api.get(f"/jobs/{job_id}").json()
    assert body["status"] == "finished"
    assert body["result_url"] == f"/jobs/{job_id}/weights"
    assert body["result"]["val_accuracy"] == [0.5, 0.75, 1.0, 0.25]
    assert body["result"]["expired"] is False and body["result"]["size_bytes"] == len(content)

    response = api.get(body["result_url"])
    assert response.status_code == 200
    assert response.content == content
    assert response.headers["content-type"] == "application/octet-stream"
    disposition = response.headers["content-disposition"]
    assert (
        disposition.startswith("attachment;") and f"mlp-digits-x4-seed1-{job_id}.safetensors" in disposition
    )


def test_expired_result_is_410_while_the_record_lives(
    api: TestClient, queue: Queue, settings: Settings
) -> None:
    job_id = _submit(api)
    _finish(queue, settings, job_id, expires_in=-1)
    body = api.get(f"/jobs/{job_id}").json()
    assert body["status"] == "finished" and body["result"]["expired"] is True and body["result_url"] is None
    response = api.get(f"/jobs/{job_id}/weights")
    assert response.status_code == 410
    assert response.json()["type"] == "/problems/result-expired"


def test_result_file_gone_is_410(api: TestClient, queue: Queue, settings: Settings) -> None:
    job_id = _submit(api)
    _finish(queue, settings, job_id, expires_in=3600)
    Path(result_path(settings.results_dir, job_id)).unlink()  # e.g. swept by a worker with a shorter TTL
    assert api.get(f"/jobs/{job_id}/weights").status_code == 410


def test_result_cut_short_is_410_never_served(api: TestClient, queue: Queue, settings: Settings) -> None:
    """A result the store flushed after publishing it can be cut short by a power loss: the API
    compares its size with the job's record and refuses it, for a download and for HEAD."""
    job_id = _submit(api)
    content = _finish(queue, settings, job_id, expires_in=3600)
    Path(result_path(settings.results_dir, job_id)).write_bytes(content[:-10])
    for method in ("GET", "HEAD"):
        response = api.request(method, f"/jobs/{job_id}/weights")
        assert response.status_code == 410, method
    problem = api.get(f"/jobs/{job_id}/weights").json()
    assert problem["type"] == "/problems/result-damaged"
    assert (
        f"{len(content) - 10} of {len(content)} bytes" in problem["detail"]
        and "same seed" in problem["detail"]
    )


def test_delete_cancels_a_queued_job(api: TestClient, queue: Queue) -> None:
    job_id = _submit(api)
    response = api.delete(f"/jobs/{job_id}")
    assert response.status_code == 200
    assert response.json()["status"] == "canceled"
    assert queue.count == 0  # a worker will never see it
    canceled = api.get(f"/jobs/{job_id}").json()
    assert canceled["status"] == "canceled"
    assert canceled["ended_at"] is not None and canceled["ended_at"] >= canceled["enqueued_at"]
    assert response.json()["ended_at"] == canceled["ended_at"]
    weights = api.get(f"/jobs/{job_id}/weights")
    assert weights.status_code == 409 and weights.json()["type"] == "/problems/job-has-no-result"
    assert "will never have them" in weights.json()["detail"] and "retry-after" not in weights.headers
    again = api.delete(f"/jobs/{job_id}")
    assert again.status_code == 409 and again.json()["type"] == "/problems/job-ended"


def test_delete_of_a_running_job_asks_its_worker_to_stop(api: TestClient, queue: Queue) -> None:
    job_id = _submit(api)
    job = Job.fetch(job_id, connection=queue.connection, serializer=SERIALIZER)
    job.worker_name = "worker-under-test"
    job.save()
    job.set_status(JobStatus.STARTED)
    pubsub = queue.connection.pubsub()
    pubsub.subscribe("rq:pubsub:worker-under-test")
    assert pubsub.get_message(timeout=1)["type"] == "subscribe"

    response = api.delete(f"/jobs/{job_id}")
    assert response.status_code == 202 and response.json()["status"] == "started"
    message = pubsub.get_message(timeout=1)
    assert message is not None and b"stop-job" in message["data"] and job_id.encode() in message["data"]
    pubsub.close()


def test_head_of_the_weights_answers_get_s_headers(api: TestClient, queue: Queue, settings: Settings) -> None:
    """Found by a user: HEAD was 405."""
    job_id = _submit(api)
    assert api.head(f"/jobs/{job_id}/weights").status_code == 409  # not finished yet
    content = _finish(queue, settings, job_id, expires_in=3600)
    got, head = api.get(f"/jobs/{job_id}/weights"), api.head(f"/jobs/{job_id}/weights")
    assert head.status_code == 200 and head.content == b""
    for header in ("content-length", "content-type", "content-disposition"):
        assert head.headers[header] == got.headers[header], header
    assert head.headers["content-length"] == str(len(content))
    assert api.head("/jobs/0123456789abcdef/weights").status_code == 404


def test_weights_of_a_job_that_ended_without_them_say_they_never_will(api: TestClient, queue: Queue) -> None:
    """Found by a user: a failed, stopped or canceled job's weights were "409: ... exist once it is
    finished", as if waiting could help."""
    for status in (JobStatus.FAILED, JobStatus.STOPPED):
        job_id = _submit(api)
        Job.fetch(job_id, connection=queue.connection, serializer=SERIALIZER).set_status(status)
        response = api.get(f"/jobs/{job_id}/weights")
        assert response.status_code == 409 and "retry-after" not in response.headers
        assert response.json()["detail"] == (
            f"job {job_id} is {status.value}: it ended without weights and will never have them"
        )


def test_a_long_poll_answers_when_the_job_ends(api: TestClient, queue: Queue, settings: Settings) -> None:
    job_id = _submit(api)
    finisher = threading.Timer(0.3, _finish, (queue, settings, job_id, 60))
    finisher.start()
    started = time.monotonic()
    response = api.get(f"/jobs/{job_id}", params={"wait": 20})
    finisher.join()
    assert response.status_code == 200 and response.json()["status"] == "finished"
    assert time.monotonic() - started < 20  # answered at the end, not after the whole wait


def test_a_long_poll_until_the_end_passes_over_progress(
    api: TestClient, queue: Queue, settings: Settings
) -> None:
    """`until=end` answers at the job's end, not at a progress change before it; `until=change`
    answers at the progress change."""
    job_id = _submit(api)

    def move_progress(done: int) -> None:
        job = Job.fetch(job_id, connection=queue.connection, serializer=SERIALIZER)
        job.meta["progress"] = {"done": done, "total": 4}
        job.save_meta()

    timers = [
        threading.Timer(0.2, move_progress, (1,)),
        threading.Timer(0.5, move_progress, (2,)),  # passed over by the second long poll
        threading.Timer(0.8, _finish, (queue, settings, job_id, 60)),
    ]
    for timer in timers:
        timer.start()
    started = time.monotonic()
    changed = api.get(f"/jobs/{job_id}", params={"wait": 20})
    assert changed.json()["status"] == "queued" and changed.json()["progress"] == {"done": 1, "total": 4}
    assert time.monotonic() - started < 0.5
    ended = api.get(f"/jobs/{job_id}", params={"wait": 20, "until": "end"})
    for timer in timers:
        timer.join()
    assert ended.json()["status"] == "finished" and 0.8 <= time.monotonic() - started < 20
    bad = api.get(f"/jobs/{job_id}", params={"wait": 1, "until": "soon"})
    assert bad.status_code == 422 and bad.headers["content-type"] == PROBLEM and "until" in bad.text


def test_a_long_poll_on_an_unchanged_job_answers_after_the_wait(api: TestClient) -> None:
    job_id = _submit(api)  # no worker: it stays queued
    started = time.monotonic()
    response = api.get(f"/jobs/{job_id}", params={"wait": 0.3})
    assert response.status_code == 200 and response.json()["status"] == "queued"
    assert time.monotonic() - started >= 0.3
    for wait in (-1, 31, "soon"):
        response = api.get(f"/jobs/{job_id}", params={"wait": wait})
        assert response.status_code == 422 and response.headers["content-type"] == PROBLEM
        assert "wait" in response.text


def test_the_server_cuts_a_long_poll_to_its_limit(settings: Settings) -> None:
    with TestClient(app_for(settings.model_copy(update={"long_poll_max_s": 0.2}))) as api:
        job_id = _submit(api)
        started = time.monotonic()
        response = api.get(f"/jobs/{job_id}", params={"wait": 30})
        assert response.status_code == 200 and response.json()["status"] == "queued"
        assert 0.2 <= time.monotonic() - started < 30

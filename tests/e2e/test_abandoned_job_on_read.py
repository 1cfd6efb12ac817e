"""The only worker (`python -m worker`, as `dwf serve` runs one) is SIGKILLed mid-job, and none is
left to settle its job: GET /jobs/<id> on the API does, answering `failed` with an error naming the
dead worker within a few heartbeat TTLs. Real Redis, a real worker process, the shipped mlp-digits.

(With a second worker alive, that worker settles the job: tests/e2e/test_faults.py.)
"""

import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from rq import Worker
from rq.job import Job

from service.embedded import embedded_redis
from service.queue import SERIALIZER, generation_queue
from service.settings import Settings
from service.storage import result_path
from tests.service.stack import app_for
from tests.worker.stack import ARTIFACT, process_env, started, wait_for

pytestmark = pytest.mark.skipif(
    not (ARTIFACT / "card.json").is_file(), reason=f"generator artifact {ARTIFACT} is absent"
)
HEARTBEAT_TTL = 4  # seconds
SLOW_JOB = {"architecture": "mlp-digits", "count": 128, "seed": 7, "steps": 100}  # ~10-25 s on one CPU thread


@pytest.fixture
def settings(tmp_path: Path) -> Iterator[Settings]:
    (tmp_path / "generators").mkdir()
    (tmp_path / "generators" / "mlp-digits").symlink_to(ARTIFACT, target_is_directory=True)
    with embedded_redis(tmp_path / "redis.rdb") as url:
        yield Settings(
            redis_url=url,
            queue_name=f"abandoned-{uuid.uuid4().hex[:8]}",
            results_dir=tmp_path / "results",
            generators_dir=tmp_path / "generators",
            job_heartbeat_ttl=HEARTBEAT_TTL,  # the API's, for the message; the worker's below
        )


def test_reading_a_job_whose_only_worker_was_killed_fails_it(settings: Settings, tmp_path: Path) -> None:
    queue = generation_queue(settings)
    env = process_env(
        REDIS_URL=settings.redis_url or "",
        DWF_QUEUE_NAME=settings.queue_name,
        DWF_RESULTS_DIR=str(settings.results_dir),
        DWF_GENERATORS_DIR=str(settings.generators_dir),
        DWF_JOB_HEARTBEAT_TTL=str(HEARTBEAT_TTL),
    )
    with TestClient(app_for(settings)) as api, started("worker", env, tmp_path / "worker.log") as worker:
        wait_for(
            lambda: Worker.count(connection=queue.connection, queue=queue) == 1, 60, "the worker to start"
        )
        response = api.post("/generate", json=SLOW_JOB)
        assert response.status_code == 202, response.text
        job_id = response.json()["id"]
        wait_for(lambda: api.get(f"/jobs/{job_id}").json()["progress"]["done"] > 0, 60, "progress")
        worker_name = Job.fetch(job_id, connection=queue.connection, serializer=SERIALIZER).worker_name
        assert worker_name
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait()
        killed_at = time.monotonic()

        assert api.get(f"/jobs/{job_id}").json()["status"] == "started"  # its heartbeat has not lapsed yet

        def failed() -> dict | None:
            body = api.get(f"/jobs/{job_id}").json()
            return body if body["status"] != "started" else None

        body = wait_for(failed, 5 * HEARTBEAT_TTL, f"GET /jobs/{job_id} to settle the job", interval=0.5)
        settled_after = time.monotonic() - killed_at
        print(f"GET /jobs/{job_id} answered {body['status']} {settled_after:.1f} s after the kill")
        assert body["status"] == "failed", body
        died = f"WorkerDied: worker {worker_name} died while running this job"
        assert body["error"].startswith(f"{died} (no heartbeat for {HEARTBEAT_TTL} s"), body["error"]
        assert 0 < body["progress"]["done"] < SLOW_JOB["count"] and body["ended_at"] is not None
        assert settled_after < 3 * HEARTBEAT_TTL
        weights = api.get(f"/jobs/{job_id}/weights")
        assert weights.status_code == 409 and "retry-after" not in weights.headers
        assert api.delete(f"/jobs/{job_id}").status_code == 409
    assert not result_path(settings.results_dir, job_id).exists()

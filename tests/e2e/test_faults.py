"""Faults with real processes: worker subprocesses (`python -m worker`) on a real Redis server, the
API app in this process, the shipped generator mlp-digits.

- a worker killed with SIGKILL mid-job: another worker fails the job, saying the worker died
  (or, with DWF_JOB_RETRIES, runs it again to the end), within a few heartbeat TTLs;
- a results directory that cannot take files, or a write that fails halfway: the job fails
  naming the directory and the fix, nothing partial is left or served, and the worker goes on.

(Broken generator artifacts: tests/worker/test_artifact_faults.py.)
"""

import os
import resource
import shutil
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from rq import Queue, Worker
from rq.job import Job
from safetensors import safe_open

from service.embedded import embedded_redis
from service.main import create_app
from service.queue import SERIALIZER, generation_queue
from service.results import WORKER_DEATHS
from service.settings import Settings, get_settings
from service.storage import result_path
from tests.worker.stack import ARTIFACT, process_env, started, wait_for

pytestmark = pytest.mark.skipif(
    not (ARTIFACT / "card.json").is_file(), reason=f"generator artifact {ARTIFACT} is absent"
)
HEARTBEAT_TTL = 4  # seconds; a dead worker's job is settled within a few of these
SLOW_JOB = {"count": 128, "steps": 100}  # ~10-25 s on one CPU thread (screening draws ~3 candidates each)
FILE_SIZE_LIMIT = 2**20  # bytes a worker process may write to one file in the "disk full" test


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with embedded_redis(tmp_path_factory.mktemp("redis") / "faults.rdb") as url:
        yield url


def _settings(redis_url: str, root: Path, job_retries: int = 0) -> Settings:
    """The settings of the API and, through _worker_env, of the workers: both settle a dead worker's
    job (the API when the job is read), so they must agree on the heartbeat TTL and retries."""
    (root / "generators").mkdir(parents=True)
    (root / "generators" / "mlp-digits").symlink_to(ARTIFACT, target_is_directory=True)
    return Settings(
        redis_url=redis_url,
        queue_name=f"faults-{uuid.uuid4().hex[:8]}",
        results_dir=root / "results",
        generators_dir=root / "generators",
        job_heartbeat_ttl=HEARTBEAT_TTL,
        job_retries=job_retries,
    )


def _worker_env(settings: Settings, **extra: str) -> dict[str, str]:
    return process_env(
        REDIS_URL=settings.redis_url,
        DWF_QUEUE_NAME=settings.queue_name,
        DWF_RESULTS_DIR=str(settings.results_dir),
        DWF_GENERATORS_DIR=str(settings.generators_dir),
        DWF_JOB_HEARTBEAT_TTL=str(settings.job_heartbeat_ttl),
        DWF_JOB_RETRIES=str(settings.job_retries),
        **extra,
    )


def _api(settings: Settings) -> TestClient:
    app = create_app(settings)
    app.dependency_overrides[get_settings] = lambda: settings
    return TestClient(app)


def _submit(api: TestClient, count: int, steps: int = 4) -> str:
    response = api.post(
        "/generate", json={"architecture": "mlp-digits", "count": count, "seed": 7, "steps": steps}
    )
    assert response.status_code == 202, response.text
    return response.json()["id"]


def _job(api: TestClient, job_id: str) -> dict:
    """GET /jobs/<id>, after checking that GET /jobs/<id>/weights serves nothing unless it finished.

    The job may finish between the two reads, so the status is read before and after the weights:
    finished before means 200, not finished after means 409."""
    before = api.get(f"/jobs/{job_id}").json()
    weights = api.get(f"/jobs/{job_id}/weights")
    body = api.get(f"/jobs/{job_id}").json()
    if before["status"] == "finished":
        assert weights.status_code == 200
    elif body["status"] != "finished":
        assert weights.status_code == 409
    return body


def _ended(api: TestClient, job_id: str, timeout: float = 60) -> dict:
    """The job's resource once it finished or failed."""

    def ended() -> dict | None:
        body = _job(api, job_id)
        return body if body["status"] in {"finished", "failed"} else None

    return wait_for(ended, timeout, f"job {job_id} to end")


def _workers(queue: Queue) -> int:
    return Worker.count(connection=queue.connection, queue=queue)


def _kill_mid_job(api: TestClient, settings: Settings, tmp_path: Path) -> tuple[str, dict, float]:
    """Run a slow job with two workers up, SIGKILL the one running it once the job made progress;
    returns the job id, its resource once it ended, and seconds from the kill to that."""
    env, queue = _worker_env(settings), generation_queue(settings)
    with started("worker", env, tmp_path / "a.log") as a, started("worker", env, tmp_path / "b.log") as b:
        wait_for(lambda: _workers(queue) == 2, 60, "both workers to start")
        job_id = _submit(api, **SLOW_JOB)
        wait_for(lambda: _job(api, job_id)["progress"]["done"] > 0, 60, "the job to make progress")
        job = Job.fetch(job_id, connection=queue.connection, serializer=SERIALIZER)
        running = next(w for w in Worker.all(queue=queue) if w.name == job.worker_name)
        victim, survivor = (a, b) if running.pid == a.pid else (b, a)
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait()
        killed_at = time.monotonic()
        assert _job(api, job_id)["status"] == "started"
        assert not result_path(settings.results_dir, job_id).exists()
        body = _ended(api, job_id, timeout=90)
        assert survivor.poll() is None
    return job_id, body, time.monotonic() - killed_at


def test_a_worker_killed_mid_job_fails_the_job_saying_so(redis_url: str, tmp_path: Path) -> None:
    settings = _settings(redis_url, tmp_path)
    with _api(settings) as api:
        job_id, body, settled_after = _kill_mid_job(api, settings, tmp_path)
        print(f"job failed {settled_after:.1f} s after its worker was killed")
        assert body["status"] == "failed" and settled_after < 5 * HEARTBEAT_TTL
        assert (
            body["error"].startswith("WorkerDied: worker ") and "died while running this job" in body["error"]
        )
        assert 0 < body["progress"]["done"] < SLOW_JOB["count"]
        assert api.get(f"/jobs/{job_id}/weights").status_code == 409
    assert not result_path(settings.results_dir, job_id).exists()


def test_a_killed_workers_job_is_retried_to_the_end(redis_url: str, tmp_path: Path) -> None:
    settings = _settings(redis_url, tmp_path, job_retries=1)
    with _api(settings) as api:
        job_id, body, _ = _kill_mid_job(api, settings, tmp_path)
        assert body["status"] == "finished", body["error"]
        weights = api.get(f"/jobs/{job_id}/weights")
    assert len(weights.content) == body["result"]["size_bytes"]
    (tmp_path / "download.safetensors").write_bytes(weights.content)
    with safe_open(str(tmp_path / "download.safetensors"), framework="pt") as handle:
        assert handle.metadata()["job_id"] == job_id and handle.metadata()["count"] == str(SLOW_JOB["count"])
        assert all(handle.get_slice(key).get_shape()[0] == SLOW_JOB["count"] for key in handle.keys())  # noqa: SIM118
    job = Job.fetch(job_id, connection=generation_queue(settings).connection, serializer=SERIALIZER)
    assert job.meta[WORKER_DEATHS] == 1
    assert [p.name for p in settings.results_dir.iterdir()] == [f"{job_id}.safetensors"]


@pytest.fixture(scope="module")
def store_faults(
    redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Settings, TestClient]]:
    """One worker whose results directory is unusable when it starts (its parent is a regular
    file), and which may write at most FILE_SIZE_LIMIT bytes to a file (RLIMIT_FSIZE, as a quota
    or a nearly full disk would); the API beside it."""
    root = tmp_path_factory.mktemp("store-faults")
    settings = _settings(redis_url, root)
    settings = settings.model_copy(update={"results_dir": root / "blocked" / "results"})
    (root / "blocked").write_text("a regular file where a directory should be")
    queue = generation_queue(settings)
    with started("worker", _worker_env(settings), root / "worker.log") as worker, _api(settings) as api:
        resource.prlimit(worker.pid, resource.RLIMIT_FSIZE, (FILE_SIZE_LIMIT, FILE_SIZE_LIMIT))
        wait_for(lambda: _workers(queue) == 1, 60, "the worker to start despite its results directory")
        yield settings, api
        assert worker.poll() is None, "the worker died"


def _blocked(settings: Settings) -> Path:
    """Make the results directory's parent a regular file again (if a test fixed it); returns it."""
    parent = settings.results_dir.parent
    if parent.is_dir():
        shutil.rmtree(parent)
        parent.write_text("a regular file where a directory should be")
    return parent


def test_an_unwritable_results_directory_fails_jobs_until_it_is_fixed(store_faults) -> None:
    settings, api = store_faults
    parent = _blocked(settings)
    failed = _ended(api, _submit(api, count=4))
    assert failed["status"] == "failed"
    unwritable = f"results directory {settings.results_dir} is not writable or is full"
    assert failed["error"].startswith(f"service.storage_base.ResultStoreError: {unwritable}")
    assert "Not a directory" in failed["error"] and "set DWF_RESULTS_DIR" in failed["error"]

    parent.unlink()  # the fix; the worker needs no restart
    finished = _ended(api, _submit(api, count=4))
    assert finished["status"] == "finished"
    assert (
        api.get(finished["result_url"]).content
        == result_path(settings.results_dir, finished["id"]).read_bytes()
    )

    if os.geteuid() != 0:  # root writes into read-only directories
        settings.results_dir.chmod(0o500)
        try:
            assert "is not writable" in _ended(api, _submit(api, count=4))["error"]
        finally:
            settings.results_dir.chmod(0o700)


def test_a_write_failing_halfway_leaves_nothing_and_the_worker_goes_on(store_faults) -> None:
    settings, api = store_faults
    if settings.results_dir.parent.is_file():
        settings.results_dir.parent.unlink()
    before = set(settings.results_dir.iterdir()) if settings.results_dir.is_dir() else set()
    too_big = _ended(api, _submit(api, count=100), timeout=120)  # 100 networks x 14 kB > FILE_SIZE_LIMIT
    assert too_big["status"] == "failed"
    assert f"results directory {settings.results_dir} is not writable or is full" in too_big["error"]
    assert "File too large" in too_big["error"]
    assert set(settings.results_dir.iterdir()) == before  # no partial result, no temporary file
    small = _ended(api, _submit(api, count=4))
    assert small["status"] == "finished" and api.get(small["result_url"]).status_code == 200

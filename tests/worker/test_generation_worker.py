"""The worker process model: jobs run in the worker's own process with its preloaded generators,
report progress, write results atomically, fail with a readable error, time out and stop on request.

The generators here are test doubles with the real `Generator.generate` signature, so that timing
(slow jobs, stops mid-job) is under the test's control; tests/e2e runs real artifacts.
"""

import json
import os
import threading
import time
from collections.abc import Callable

import pytest
import torch
from rq import Queue
from rq.job import Job
from safetensors import safe_open

from contract.jobs import JobRequest
from contract.result_file import ResultMetadata
from models.generator import GeneratedEnsemble
from service.queue import SERIALIZER, cancel, enqueue_generation, job_resource, new_job_id
from service.results import recover_abandoned_jobs
from service.settings import Settings
from service.storage import LocalResultStore, result_path

Progress = Callable[[int, int], None] | None


class StubGenerator:
    """Stacked (count, 3, 2) weights from the seed; progress reported per network."""

    def __init__(self, delay_s: float = 0.0, on_progress: Callable[[], None] | None = None, error: str = ""):
        self.delay_s, self.on_progress, self.error = delay_s, on_progress, error
        self.pids: list[int] = []

    def generate(
        self, count: int, seed: int, sampler=None, steps=None, progress: Progress = None, evaluate=True
    ):
        self.pids.append(os.getpid())
        if self.error:
            raise ValueError(self.error)
        for done in range(1, count + 1):
            time.sleep(self.delay_s)
            if self.on_progress:
                self.on_progress()
            if progress:
                progress(done, count)
        weights = torch.randn(count, 3, 2, generator=torch.Generator().manual_seed(seed))
        metadata = ResultMetadata(
            architecture="stub",
            generator_version="1",
            count=count,
            seed=seed,
            sampler=sampler,
            steps=steps,
            val_accuracy=torch.linspace(0.5, 1.0, count).tolist() if evaluate else None,
        )
        return GeneratedEnsemble({"w": weights}, metadata)


def _enqueue(
    queue: Queue, settings: Settings, count: int = 4, architecture: str = "stub", validate: bool = True
) -> Job:
    request = JobRequest(
        architecture=architecture, count=count, seed=3, sampler="euler", steps=5, validation=validate
    )
    return enqueue_generation(queue, request, settings, owner="anonymous", job_id=new_job_id())


def _fetch(queue: Queue, job: Job) -> Job:
    return Job.fetch(job.id, connection=queue.connection, serializer=SERIALIZER)


def test_jobs_run_in_the_worker_process_and_write_their_result(queue, settings, run_worker) -> None:
    stub = StubGenerator()
    first, second = _enqueue(queue, settings, count=4), _enqueue(queue, settings, count=2, validate=False)
    run_worker({"stub": stub})

    assert stub.pids == [os.getpid(), os.getpid()]  # no fork per job: the preloaded generator ran in place
    done = _fetch(queue, first)
    assert done.get_status().value == "finished"
    assert done.meta["progress"] == {"done": 4, "total": 4}
    resource = job_resource(done)
    assert (
        resource.result is not None and resource.result.val_accuracy == torch.linspace(0.5, 1.0, 4).tolist()
    )
    assert resource.result.metadata["job_id"] == first.id and resource.result_url
    unvalidated = job_resource(_fetch(queue, second)).result  # validation only when the request asks
    assert unvalidated is not None and unvalidated.val_accuracy is None

    path = result_path(settings.results_dir, first.id)
    assert resource.result.size_bytes == path.stat().st_size
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata()
        weights = handle.get_tensor("w")
    assert metadata["format"] == "pt" and metadata["job_id"] == first.id and metadata["seed"] == "3"
    assert json.loads(metadata["val_accuracy"]) == [0.5, 0.666667, 0.833333, 1.0]
    assert torch.equal(weights, torch.randn(4, 3, 2, generator=torch.Generator().manual_seed(3)))
    assert resource.result.expires_at.timestamp() == pytest.approx(
        path.stat().st_mtime + settings.result_ttl, abs=1e-3
    )
    assert sorted(p.name for p in settings.results_dir.iterdir()) == sorted(
        f"{j.id}.safetensors" for j in (first, second)
    )  # no temporary files left behind


def test_a_failing_job_reports_its_error(queue, settings, run_worker) -> None:
    failing, unknown = _enqueue(queue, settings), _enqueue(queue, settings, architecture="nope")
    run_worker({"stub": StubGenerator(error="the flow diverged")})
    assert job_resource(_fetch(queue, failing)).error == "ValueError: the flow diverged"
    assert (
        job_resource(_fetch(queue, unknown)).error
        == "ValueError: this worker has no generator 'nope'; it has: stub"
    )
    assert _fetch(queue, failing).get_status().value == "failed"
    assert not any(settings.results_dir.iterdir())


def test_a_job_over_its_timeout_is_killed_and_failed(queue, settings, run_worker) -> None:
    job = _enqueue(queue, settings.model_copy(update={"job_timeout": 1}), count=50)  # 50 x 0.1 s > 1 s
    start = time.monotonic()
    run_worker({"stub": StubGenerator(delay_s=0.1)})
    assert time.monotonic() - start < 3
    resource = job_resource(_fetch(queue, job))
    assert resource.status == "failed"
    assert "JobTimeoutException" in resource.error
    assert 0 < resource.progress.done < 50


def test_a_long_job_keeps_renewing_its_heartbeat(queue, settings, run_worker) -> None:
    """A job running for two heartbeat TTLs is never taken for abandoned by `recover_abandoned_jobs`
    (which other workers run), and its registry entry never reaches further than one TTL ahead:
    that is how soon the job of a worker killed mid-job is found (tests/e2e/test_faults.py)."""
    job = _enqueue(queue, settings, count=16)  # 16 x 0.25 s = 4 s
    registry, store = queue.started_job_registry, LocalResultStore(settings.results_dir)
    settled: list[list[str]] = []

    def check_liveness() -> None:
        [(_, expires_at)] = queue.connection.zrange(registry.key, 0, -1, withscores=True)
        assert expires_at <= time.time() + 2
        settled.append(recover_abandoned_jobs(queue, store, heartbeat_ttl=2, retries=0))

    run_worker({"stub": StubGenerator(delay_s=0.25, on_progress=check_liveness)}, heartbeat_ttl=2)
    assert _fetch(queue, job).get_status().value == "finished"
    assert settled == [[]] * 16


def test_a_running_job_stops_on_request(queue, settings, run_worker) -> None:
    job = _enqueue(queue, settings, count=40)

    def request_stop_once() -> None:  # what DELETE /jobs/<id> does while the job runs
        if not stub.stop_sent:
            stub.stop_sent = True
            assert cancel(queue, _fetch(queue, job)) == "started"

    stub = StubGenerator(delay_s=0.02, on_progress=request_stop_once)
    stub.stop_sent = False
    run_worker({"stub": stub})
    resource = job_resource(_fetch(queue, job))
    assert resource.status == "stopped" and resource.error == "stopped on request"
    assert resource.progress.done < 40
    assert not result_path(settings.results_dir, job.id).exists()


def test_a_stop_interrupts_a_job_between_progress_reports(queue, settings, run_worker) -> None:
    job = _enqueue(queue, settings, count=1)  # one progress report, after 5 s of silent work

    def stop_when_started() -> None:
        deadline = time.monotonic() + 3
        while _fetch(queue, job).get_status().value != "started":
            assert time.monotonic() < deadline, "the job never started"
            time.sleep(0.01)
        # cancel re-reads the status after the request: the worker may have stopped the job already
        assert cancel(queue, _fetch(queue, job)) in ("started", "stopped")

    stopper = threading.Thread(target=stop_when_started)
    stopper.start()
    start = time.monotonic()
    run_worker({"stub": StubGenerator(delay_s=5)})
    stopper.join()
    assert time.monotonic() - start < 4  # interrupted mid-sleep, not at the progress report
    assert _fetch(queue, job).get_status().value == "stopped"
    assert not result_path(settings.results_dir, job.id).exists()


def test_maintenance_deletes_expired_results(queue, settings, run_worker) -> None:
    settings.results_dir.mkdir(parents=True)
    old, fresh = settings.results_dir / "old.safetensors", settings.results_dir / "fresh.safetensors"
    for path in (old, fresh):
        path.write_bytes(b"x")
    an_hour_and_more_ago = time.time() - settings.result_ttl - 5
    os.utime(old, (an_hour_and_more_ago, an_hour_and_more_ago))
    run_worker({})
    assert not old.exists() and fresh.exists()

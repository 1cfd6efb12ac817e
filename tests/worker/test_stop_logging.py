"""A job stopped by DELETE /jobs/<id> is one line in the worker's log, not a traceback."""

import logging
import time

import pytest
from rq import Queue
from rq.job import Job

from service.queue import SERIALIZER, cancel, enqueue_generation, job_resource, new_job_id
from service.schemas import JobRequest
from service.settings import Settings


class StoppedMidway:
    """A generator whose job is asked to stop (as DELETE does) at its first progress report."""

    def __init__(self, queue: Queue):
        self.queue = queue

    def generate(self, count: int, seed: int, progress=None, **options):
        job_id = next(iter(self.queue.started_job_registry.get_job_ids()))
        cancel(self.queue, Job.fetch(job_id, connection=self.queue.connection, serializer=SERIALIZER))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            time.sleep(0.01)  # interrupted by JobStopped once the stop request arrived
        raise AssertionError("the stop request never arrived")


def test_a_stopped_job_logs_one_line(
    queue: Queue, settings: Settings, run_worker, caplog: pytest.LogCaptureFixture
) -> None:
    request = JobRequest(architecture="stub", count=100_000, seed=3, sampler="euler", steps=5)
    job = enqueue_generation(queue, request, settings, owner="anonymous", job_id=new_job_id())
    with caplog.at_level(logging.INFO):
        run_worker({"stub": StoppedMidway(queue)})
    resource = job_resource(Job.fetch(job.id, connection=queue.connection, serializer=SERIALIZER))
    assert resource.status == "stopped" and resource.error == "stopped on request"
    about_job = [r for r in caplog.records if job.id in r.getMessage()]
    assert not [r for r in caplog.records if "Traceback" in r.getMessage() or r.exc_info]
    assert [r.getMessage() for r in about_job if r.levelno >= logging.WARNING] == []
    assert any("stopped on request" in r.getMessage() for r in about_job)

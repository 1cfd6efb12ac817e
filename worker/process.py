"""The worker process: an rq SimpleWorker (no fork per job) holding the generators for its lifetime."""

import logging
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from redis import Redis
from redis.exceptions import RedisError
from rq import Queue, SimpleWorker
from rq.executions import Execution
from rq.job import Job
from rq.worker import WorkerStatus

from service.queue import SERIALIZER, redis_connection
from service.results import recover_abandoned_jobs
from service.settings import Settings
from service.storage import ResultStoreError
from worker.runtime import STOP_SIGNAL, JobStopped, Runtime, install_runtime, load_runtime

log = logging.getLogger(__name__)


class GeneratorWorker(SimpleWorker):
    """Runs jobs in its own process, so torch, the artifacts and a CUDA context are set up once.

    rq's stop command (DELETE /jobs/<id> on a running job) would kill a forked work horse;
    here there is none, so it goes to `Runtime.request_stop`, which interrupts the job.

    Liveness: while a job runs, a thread renews its heartbeat every `heartbeat_ttl / 4` seconds.
    (rq's SimpleWorker instead registers the job for its whole timeout, so a worker killed
    mid-job would leave it `started` for up to `job_timeout` + 60 s.) Every `heartbeat_ttl`
    seconds an idle worker settles the jobs of workers that died (`recover_abandoned_jobs`:
    failed, or queued again `job_retries` times) and runs rq's registry cleaning; every
    `min(600, result_ttl)` seconds it deletes expired results and temporary files older than
    `job_timeout` (no job writing them can still be running).
    """

    def __init__(
        self,
        queues: list[Queue],
        runtime: Runtime,
        connection: Redis,
        job_timeout: float = 3600,
        heartbeat_ttl: int = 60,
        job_retries: int = 0,
        **kwargs,
    ):
        super().__init__(
            queues,
            connection=connection,
            serializer=SERIALIZER,
            worker_ttl=heartbeat_ttl + 15,  # rq waits worker_ttl - 15 s for a job before maintenance
            maintenance_interval=heartbeat_ttl,
            **kwargs,
        )
        self.runtime, self.job_timeout = runtime, job_timeout
        self.heartbeat_ttl, self.job_retries = heartbeat_ttl, job_retries
        self.sweep_interval = min(600, runtime.result_ttl)
        self.last_swept: float | None = None

    def get_heartbeat_ttl(self, job: Job, working_time: float = 0.0) -> int:
        """How long the running job's registry entry lives without a renewal."""
        return self.heartbeat_ttl

    def execute_job(self, job: Job, queue: Queue) -> None:
        """SimpleWorker's, with the job's heartbeat renewed by a thread while it runs."""
        self.runtime.stop_requested.clear()
        execution = self.prepare_execution(job)
        with self._heartbeats(job, execution):
            self.perform_job(job, queue, execution)
        self.set_state(WorkerStatus.IDLE)

    @contextmanager
    def _heartbeats(self, job: Job, execution: Execution) -> Iterator[None]:
        finished = threading.Event()

        def renew() -> None:
            while not finished.wait(self.heartbeat_ttl / 4):
                try:
                    self.maintain_heartbeats(job, execution)
                except RedisError as error:  # Redis away for a moment: the next renewal may succeed
                    log.warning("job %s: heartbeat failed: %s", job.id, error)

        thread = threading.Thread(target=renew, name=f"heartbeat-{job.id}", daemon=True)
        thread.start()
        try:
            yield
        finally:
            finished.set()
            thread.join()

    def handle_exception(self, job: Job, *exc_info) -> None:
        """rq logs a failed job's traceback; a job stopped on request gets one line."""
        if exc_info and isinstance(exc_info[1], JobStopped):
            log.info("job %s: stopped on request", job.id)
            return
        super().handle_exception(job, *exc_info)

    def kill_horse(self, sig: object = None) -> None:
        """There is no horse: stop the running job instead."""
        self.runtime.request_stop()

    def work(self, *args, **kwargs) -> bool:
        """rq's work loop, with the runtime's stop signal handled (on this, the main, thread)."""
        signal.signal(STOP_SIGNAL, self.runtime.on_stop_signal)
        return super().work(*args, **kwargs)

    def run_maintenance_tasks(self) -> None:
        """Settle abandoned jobs and clean rq's registries; sweep the result store when due.
        A failing store is logged, never fatal: rq's work loop ends on an exception here."""
        try:
            for queue in self.queues:
                recover_abandoned_jobs(queue, self.runtime.store, self.heartbeat_ttl, self.job_retries)
        except ResultStoreError as error:
            log.error("settling abandoned jobs: %s", error)
        super().run_maintenance_tasks()
        if self.last_swept is None or time.monotonic() - self.last_swept >= self.sweep_interval:
            self.last_swept = time.monotonic()
            store = self.runtime.store
            try:
                expired = store.expire(self.runtime.result_ttl)
                stale = store.sweep_temporaries(older_than=self.job_timeout)
            except (ResultStoreError, OSError) as error:
                log.error("deleting expired results: %s", error)
            else:
                if expired or stale:
                    log.info("deleted %d expired result(s), %d stale temporary file(s)", expired, stale)


def run_worker(settings: Settings, burst: bool = False) -> None:
    """Load the generators, then work the generation queue until stopped (or, with `burst`, until empty)."""
    if not settings.redis_url:
        raise SystemExit("REDIS_URL is not set: point workers at Redis, or run everything with `dwf serve`")
    runtime = load_runtime(settings)
    install_runtime(runtime)
    connection = redis_connection(settings.redis_url)
    queue = Queue(settings.queue_name, connection=connection, serializer=SERIALIZER)
    worker = GeneratorWorker(
        [queue],
        runtime=runtime,
        connection=connection,
        job_timeout=settings.job_timeout,
        heartbeat_ttl=settings.job_heartbeat_ttl,
        job_retries=settings.job_retries,
        default_result_ttl=settings.job_ttl,
    )
    worker.work(burst=burst, logging_level="INFO")

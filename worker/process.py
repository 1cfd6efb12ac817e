"""The worker process: an rq SimpleWorker (no fork per job) holding the generators for its lifetime."""

import signal

from redis import Redis
from rq import Queue, SimpleWorker
from rq.job import Job

from service.queue import SERIALIZER, redis_connection
from service.settings import Settings
from worker.expiry import sweep_results
from worker.runtime import STOP_SIGNAL, Runtime, install_runtime, load_runtime


class GeneratorWorker(SimpleWorker):
    """Runs jobs in its own process, so torch, the artifacts and a CUDA context are set up once.

    rq's stop command (DELETE /jobs/<id> on a running job) would kill a forked work horse;
    here there is none, so it goes to `Runtime.request_stop`, which interrupts the job.
    Maintenance also deletes expired results, and temporary files older than `job_timeout`
    (no job writing them can still be running).
    """

    def __init__(
        self, queues: list[Queue], runtime: Runtime, connection: Redis, job_timeout: float = 3600, **kwargs
    ):
        super().__init__(queues, connection=connection, serializer=SERIALIZER, **kwargs)
        self.runtime, self.job_timeout = runtime, job_timeout

    def execute_job(self, job: Job, queue: Queue) -> None:
        self.runtime.stop_requested.clear()
        super().execute_job(job, queue)

    def kill_horse(self, sig: object = None) -> None:
        """There is no horse: stop the running job instead."""
        self.runtime.request_stop()

    def work(self, *args, **kwargs) -> bool:
        """rq's work loop, with the runtime's stop signal handled (on this, the main, thread)."""
        signal.signal(STOP_SIGNAL, self.runtime.on_stop_signal)
        return super().work(*args, **kwargs)

    def run_maintenance_tasks(self) -> None:
        super().run_maintenance_tasks()
        sweep_results(self.runtime.results_dir, self.runtime.result_ttl, stale_tmp_after=self.job_timeout)


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
        default_result_ttl=settings.job_ttl,
        maintenance_interval=min(600, settings.result_ttl),
    )
    worker.work(burst=burst, logging_level="INFO")

"""Settling the jobs whose worker died, so that no job stays `started` forever (the API and the
workers both do it).

A worker renews its running job's entry in rq's StartedJobRegistry every few seconds
(`worker.process`); the entry expires `job_heartbeat_ttl` seconds after the last renewal,
that is, once the worker was killed, crashed or lost its machine. `recover_abandoned_jobs`
then fails the job with a message saying so, or queues it again while `job_retries` allow.
"""

import logging

from rq import Queue
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus
from rq.job_lifecycle import record_job_failure
from rq.utils import as_text, current_timestamp, now, parse_composite_key

from service.storage_base import ResultStore

log = logging.getLogger(__name__)
WORKER_DEATHS = "worker_deaths"  # job.meta key: how many workers died running the job


def worker_died_message(job: Job, heartbeat_ttl: int, retries: int) -> str:
    """The failure of a job whose worker died (one line: the API shows a failure's last line)."""
    retried = f", after {retries} retr{'y' if retries == 1 else 'ies'}" if retries else ""
    return (
        f"WorkerDied: worker {job.worker_name or '(unknown)'} died while running this job (no heartbeat "
        f"for {heartbeat_ttl} s: killed, out of memory, crashed or its machine went away{retried}); "
        "submit it again"
    )


def recover_abandoned_jobs(queue: Queue, store: ResultStore, heartbeat_ttl: int, retries: int) -> list[str]:
    """Settle each started job of `queue` whose heartbeat expired: queue it again if it has been
    abandoned at most its `max_retries` times (recorded at submission; `retries` for a job without
    one), else fail it (deleting any result its worker stored just
    before dying). Returns the ids of the jobs settled.

    Safe to run from many processes at once: a process settles a job only if its ZREM of the
    expired registry entry succeeded.
    """
    registry, connection = queue.started_job_registry, queue.connection
    settled = []
    for entry in connection.zrangebyscore(registry.key, 0, current_timestamp()):
        if not connection.zrem(registry.key, entry):
            continue  # another worker got it first
        job_id, _ = parse_composite_key(as_text(entry))
        try:
            job = Job.fetch(job_id, connection=connection, serializer=queue.serializer)
        except NoSuchJobError:
            continue
        if job.get_status(refresh=False) != JobStatus.STARTED:
            continue  # it ended normally; only its registry entry was left behind
        job.meta[WORKER_DEATHS] = int(job.meta.get(WORKER_DEATHS, 0)) + 1
        allowed = int(job.meta.get("max_retries", retries))
        if job.meta[WORKER_DEATHS] <= allowed:
            job.meta["progress"] = {"done": 0, "total": None}
            job.save_meta()
            queue.enqueue_job(job)
            log.warning("job %s: worker %s died; queued again", job.id, job.worker_name)
        else:
            job.save_meta()
            job.ended_at = now()
            with connection.pipeline() as pipeline:
                record_job_failure(job, worker_died_message(job, heartbeat_ttl, allowed), pipeline)
                pipeline.execute()
            log.warning("job %s: worker %s died; job failed", job.id, job.worker_name)
            store.delete(job.id)
        settled.append(job.id)
    return settled

"""Redis and rq access for the API: enqueue generation jobs, read them back, cancel them.

Jobs are stored with rq's JSON serializer (never pickle). A job's `meta` holds the
resolved request, the owner (an API key fingerprint, see `service.auth`), the worker's
progress `{done, total}` and, once finished, the result summary the worker wrote (see
`worker.jobs`).

The connection is pooled per Redis URL and outlives Redis restarts: a command on a
dropped connection reconnects and retries a few times within about a second, then
raises redis's ConnectionError, which the API answers with 503 (see `service.problems`).
"""

import uuid
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from redis import Redis
from redis.backoff import ExponentialWithJitterBackoff
from redis.client import Pipeline
from redis.retry import Retry
from rq import Queue
from rq.command import send_stop_job_command
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer
from rq.utils import now, utcformat

from contract.jobs import JOB_FUNCTION, JobRequest, JobSummary
from service.schemas import JobResource, JobResult, Progress
from service.settings import Settings

SERIALIZER = JSONSerializer
# rq's names of the states a job never leaves (plain strings: JobStatus members hash by name, not value)
ENDED = frozenset(
    s.value for s in (JobStatus.FINISHED, JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED)
)


@lru_cache(maxsize=8)
def redis_connection(url: str) -> Redis:
    """One pooled, thread-safe connection per Redis URL (redis://, rediss:// or unix://).

    A failed command is retried 3 times, backing off 50-500 ms, on a fresh connection; with
    Redis down a request gives up within about a second instead of redis-py's default ten retries.
    """
    return Redis.from_url(
        url,
        health_check_interval=30,
        socket_connect_timeout=2,
        socket_timeout=5,
        retry=Retry(ExponentialWithJitterBackoff(base=0.05, cap=0.5), retries=3),
    )


@lru_cache(maxsize=64)
def _queue(url: str, name: str) -> Queue:
    # Kept per process: a Queue asks Redis for its version once, before its first enqueue.
    return Queue(name, connection=redis_connection(url), serializer=SERIALIZER)


def generation_queue(settings: Settings) -> Queue:
    if not settings.redis_url:
        raise RuntimeError("REDIS_URL is not set: start the whole stack with `dwf serve`, or set REDIS_URL")
    return _queue(settings.redis_url, settings.queue_name)


def new_job_id() -> str:
    """A job id chosen before enqueueing (rq's format: a random UUID), so limits can count it first."""
    return str(uuid.uuid4())


def enqueue_generation(
    queue: Queue,
    request: JobRequest,
    settings: Settings,
    owner: str,
    job_id: str,
    pipeline: Pipeline | None = None,
) -> Job:
    """Put one generation job of `owner` on the queue; the record outlives the result by
    `job_ttl - result_ttl`, and the job may be retried `job_retries` times if its worker dies.
    With `pipeline` (in a transaction), the job is written when it executes."""
    return queue.enqueue_call(
        JOB_FUNCTION,
        kwargs={"request": request.model_dump()},
        timeout=settings.job_timeout,
        result_ttl=settings.job_ttl,
        failure_ttl=settings.job_ttl,
        description=f"generate {request.count} x {request.architecture} (seed {request.seed})",
        job_id=job_id,
        meta={
            "request": request.model_dump(),
            "owner": owner,
            "progress": {"done": 0, "total": None},
            "max_retries": settings.job_retries,  # fixed at submission: every settling process agrees
        },
        pipeline=pipeline,
    )


def fetch_job(queue: Queue, job_id: str) -> Job | None:
    """The job, or None for an id that was never issued (or whose record has expired)."""
    try:
        return Job.fetch(job_id, connection=queue.connection, serializer=SERIALIZER)
    except (NoSuchJobError, ValueError):  # ValueError: not even a well-formed job id
        return None


def cancel(queue: Queue, job: Job) -> str:
    """Cancel a waiting job at once, or ask the worker to stop a running one; returns the status then."""
    status = job.get_status().value
    if status == JobStatus.STARTED.value:
        send_stop_job_command(queue.connection, job.id, serializer=SERIALIZER)
    elif status not in ENDED:
        job.cancel()
        job.ended_at = now()  # rq leaves a canceled job's end unset
        job.connection.hset(job.key, "ended_at", utcformat(job.ended_at))
    return job.get_status().value


def _failure_message(job: Job) -> str | None:
    """The last line of the failure's traceback ("ValueError: ..."), or why the job was stopped."""
    status = job.get_status(refresh=False)
    if status == JobStatus.STOPPED:
        return "stopped on request"
    if status != JobStatus.FAILED:
        return None
    result = job.latest_result()
    lines = [line for line in (result.exc_string or "").splitlines() if line.strip()] if result else []
    return lines[-1].strip() if lines else "failed without an error message"


def _utc(moment: datetime | None) -> datetime | None:
    return moment.replace(tzinfo=UTC) if moment is not None and moment.tzinfo is None else moment


def job_resource(job: Job, now: datetime | None = None) -> JobResource:
    """The API's view of an rq job (`now` decides whether its result has expired)."""
    meta: dict[str, Any] = job.meta
    status = job.get_status(refresh=False)
    result = None
    if status == JobStatus.FINISHED and "result" in meta:
        summary = JobSummary.model_validate(meta["result"])
        expires_at = datetime.fromtimestamp(summary.expires_at, UTC)
        strings = summary.metadata.to_strings()
        strings.pop("val_accuracy", None)
        result = JobResult(
            val_accuracy=summary.metadata.val_accuracy,
            metadata=strings,
            size_bytes=summary.size_bytes,
            expires_at=expires_at,
            expired=(now or datetime.now(UTC)) >= expires_at,
        )
    url = f"/jobs/{job.id}"
    return JobResource(
        id=job.id,
        status=status.value,
        request=JobRequest.model_validate(meta["request"]),
        progress=Progress(**meta.get("progress", {})),
        created_at=_utc(job.created_at),
        enqueued_at=_utc(job.enqueued_at),
        started_at=_utc(job.started_at),
        ended_at=_utc(job.ended_at),
        error=_failure_message(job),
        result=result,
        url=url,
        result_url=f"{url}/weights" if result is not None and not result.expired else None,
    )

"""GET /jobs/{id}, GET /jobs/{id}/weights, DELETE /jobs/{id}."""

import asyncio
import logging
import time
from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, StreamingResponse
from rq import Queue
from rq.job import Job, JobStatus

from service.auth import Caller
from service.deps import CallerDep, QueueDep, SettingsDep
from service.problems import ProblemError, documented
from service.queue import ENDED, cancel, fetch_job, job_resource
from service.results import recover_abandoned_jobs
from service.schemas import JobResource
from service.settings import Settings
from service.storage import OpenedResult, ResultStoreError, result_store

router = APIRouter(prefix="/jobs", tags=["jobs"])
MAX_WAIT_S = 30.0  # the longest long poll asked for (GET /jobs/{id}?wait=); Settings.long_poll_max_s cuts it
WAIT_POLL_S = 0.05  # how often a long poll reads the job again
log = logging.getLogger(__name__)

JOB_ERRORS = documented(
    {
        403: "the job belongs to another API key",
        404: "no such job (never issued, or its record expired)",
        503: "Redis is unavailable (see Retry-After)",
    }
)


def _owned_job(queue: Queue, job_id: str, caller: Caller) -> Job:
    """The job (404 if there is none), if the caller's key submitted it (403 if another did)."""
    job = fetch_job(queue, job_id)
    if job is None:
        raise ProblemError(404, "job-not-found", f"no job {job_id!r}")
    if not caller.may_access(job.meta.get("owner")):
        raise ProblemError(403, "forbidden", f"job {job_id} belongs to another API key")
    return job


def _settled(queue: Queue, job: Job, settings: Settings) -> Job:
    """The job, re-read after settling the queue's abandoned jobs if it is `started`.

    A job whose worker died stays `started` until some worker runs `recover_abandoned_jobs`;
    with no worker left (`dwf serve`'s only one was killed) none ever does, so reading a
    started job settles them here: one range query over the started registry when none
    expired. A result store failing to delete a dead worker's result is logged, not raised.
    """
    if job.get_status(refresh=False) != JobStatus.STARTED:
        return job
    try:
        settled = recover_abandoned_jobs(
            queue, result_store(settings), settings.job_heartbeat_ttl, settings.job_retries
        )
    except ResultStoreError as error:
        log.error("settling abandoned jobs: %s", error)
        settled = [job.id]  # it may be among those settled before the store failed
    if job.id in settled:
        job.refresh()
    return job


@router.get("/{job_id}", response_model=JobResource, responses=JOB_ERRORS)
async def get_job(
    job_id: str,
    queue: QueueDep,
    settings: SettingsDep,
    caller: CallerDep,
    wait: Annotated[
        float,
        Query(
            ge=0,
            le=MAX_WAIT_S,
            description="long poll: answer when the job changes (see `until`), or after this many "
            "seconds (0: at once; the server may cut it to its long_poll_max_s)",
        ),
    ] = 0,
    until: Annotated[
        Literal["change", "end"],
        Query(
            description="with `wait`: answer when the job's status or progress changes (change), "
            "or only when it ends (end)"
        ),
    ] = "change",
) -> JobResource:
    """Status (rq's names), progress, timestamps, error and result summary of a job.

    A started job whose worker died (no heartbeat for `job_heartbeat_ttl` s) is settled first:
    failed, saying so, or queued again while `job_retries` allow. With `wait`, the answer comes
    as soon as the job ends (or, `until=change`, its status or progress moves), within
    WAIT_POLL_S, at the latest after `wait` seconds. A waiting request holds no thread and
    little CPU: every WAIT_POLL_S it reads only the job's raw status and meta fields from Redis
    (on the thread pool), and reads the whole job only when they changed.
    """

    def read() -> JobResource:
        return job_resource(_settled(queue, _owned_job(queue, job_id, caller), settings))

    def fingerprint() -> list[bytes | None]:
        return queue.connection.hmget(Job.key_for(job_id), ["status", "meta"])

    limit = min(wait, settings.long_poll_max_s)
    seen = await run_in_threadpool(fingerprint) if limit else None  # read first: no change is missed
    resource = await run_in_threadpool(read)
    deadline = time.monotonic() + limit
    while resource.status not in ENDED and time.monotonic() < deadline:
        await asyncio.sleep(min(WAIT_POLL_S, max(deadline - time.monotonic(), 0)))
        if (latest_seen := await run_in_threadpool(fingerprint)) == seen:
            continue
        seen, latest = latest_seen, await run_in_threadpool(read)
        moved = (latest.status, latest.progress) != (resource.status, resource.progress)
        if latest.status in ENDED or (until == "change" and moved):
            return latest
        resource = latest
    if limit and resource.status not in ENDED:
        resource = await run_in_threadpool(read)  # settles a job whose worker died meanwhile
    return resource


class WeightsFile(FileResponse):
    """A result file sent in 1 MiB reads (Starlette's 64 KiB cost a thread hop per chunk: a third
    of a 47 MB download's time)."""

    chunk_size = 1 << 20


WEIGHTS_RESPONSES = {
    200: {"content": {"application/octet-stream": {}}, "description": "the safetensors file"},
    **JOB_ERRORS,
    **documented(
        {
            409: "the job has not finished yet (Retry-After), or ended without weights (failed, stopped, "
            "canceled): it never will have them",
            410: "the result has expired, or was damaged in storage (submit the request again)",
        }
    ),
}


@router.get("/{job_id}/weights", response_class=FileResponse, responses=WEIGHTS_RESPONSES)
@router.head("/{job_id}/weights", response_class=FileResponse, responses=WEIGHTS_RESPONSES)
def get_weights(
    job_id: str, request: Request, queue: QueueDep, settings: SettingsDep, caller: CallerDep
) -> Response:
    """Stream the job's safetensors file: every tensor stacked on a leading axis of length count.
    HEAD answers the same headers (size, content type, file name) without the file.

    The API streams it from the result store (a local file, or an S3 object read as it is sent)
    rather than redirecting to the object store, so the API stays the only public endpoint and
    every download passes its API-key check.
    """
    job = _settled(queue, _owned_job(queue, job_id, caller), settings)
    resource = job_resource(job, now=datetime.now(UTC))
    if resource.status in ENDED and resource.result is None:
        raise ProblemError(
            409,
            "job-has-no-result",
            f"job {job_id} is {resource.status}: it ended without weights and will never have them",
        )
    if resource.status != JobStatus.FINISHED.value or resource.result is None:
        raise ProblemError(
            409,
            "job-not-finished",
            f"job {job_id} is {resource.status}; its weights exist once it has finished",
            headers={"Retry-After": "1"},
        )
    head = request.method == "HEAD"
    try:
        store = result_store(settings)
        stored = None if resource.result.expired else (store.stat(job_id) if head else store.open(job_id))
    except ResultStoreError as error:
        log.error("%s /jobs/%s/weights: %s", request.method, job_id, error)
        raise ProblemError(
            503, "result-store-unavailable", "the result store is unavailable", headers={"Retry-After": "5"}
        ) from None
    if stored is None:
        raise ProblemError(410, "result-expired", f"the result of job {job_id} has expired")
    if stored.size != resource.result.size_bytes:  # cut short, e.g. by a power loss before its flush
        recorded = resource.result.size_bytes
        log.error("job %s: stored result has %d bytes, the job recorded %d", job_id, stored.size, recorded)
        raise ProblemError(
            410,
            "result-damaged",
            f"the result of job {job_id} was damaged in storage ({stored.size} of {recorded} bytes); "
            "submit the same request again: the same seed gives the same networks",
        )
    request_ = resource.request
    filename = f"{request_.architecture}-x{request_.count}-seed{request_.seed}-{job_id}.safetensors"
    if isinstance(stored, OpenedResult) and stored.path is not None:
        return WeightsFile(stored.path, media_type="application/octet-stream", filename=filename)
    disposition = f'attachment; filename="{filename}"'
    headers = {"Content-Length": str(stored.size), "Content-Disposition": disposition}
    if head:
        return Response(media_type="application/octet-stream", headers=headers)
    return StreamingResponse(stored.chunks, media_type="application/octet-stream", headers=headers)


@router.delete(
    "/{job_id}",
    response_model=JobResource,
    responses={
        **JOB_ERRORS,
        202: {"model": JobResource, "description": "the running job was asked to stop"},
        **documented({409: "the job has already ended"}),
    },
)
def delete_job(
    job_id: str, queue: QueueDep, settings: SettingsDep, response: Response, caller: CallerDep
) -> JobResource:
    """Cancel a queued job (200, status canceled) or ask the worker to stop a running one (202).
    A started job whose worker died is settled first (then 409 once failed)."""
    job = _settled(queue, _owned_job(queue, job_id, caller), settings)
    if (current := job.get_status().value) in ENDED:
        raise ProblemError(409, "job-ended", f"job {job_id} has already ended ({current})")
    if cancel(queue, job) not in ENDED:
        response.status_code = status.HTTP_202_ACCEPTED
    return job_resource(job)

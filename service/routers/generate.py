"""POST /generate: validate a request, resolve its defaults, enforce the caller's limits, enqueue the job.

Order of checks: API key (401), body (422), the caller's rate limit (429), the result's size (422),
a replayed Idempotency-Key (200 with the first job), the caller's queued-jobs cap (429), room for the
result (429, see service.result_budget), then the enqueue (202).
"""

import secrets
from functools import partial
from typing import Any

from fastapi import APIRouter, Response, status
from rq import Queue
from rq.job import Job

from contract.jobs import SEED_MAX, JobRequest
from service.auth import Caller
from service.catalog import Catalog
from service.deps import CallerDep, CatalogDep, QueueDep, SettingsDep
from service.idempotency import REPLAYED_HEADER, IdempotencyKeyHeader, IdempotentSubmission
from service.metrics import JOBS_SUBMITTED
from service.problems import ProblemError, documented, validation_error
from service.queue import enqueue_generation, job_resource, new_job_id
from service.ratelimit import enforce_rate_limit, release_queue_slot, reserve_queue_slot
from service.result_budget import ResultLedger, checked_result_bytes
from service.schemas import GenerateRequest, JobResource
from service.settings import Settings

router = APIRouter(tags=["jobs"])

RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "model": JobResource,
        "description": f"a replay: the job of this Idempotency-Key ({REPLAYED_HEADER})",
    },
    **documented(
        {
            400: "the body is not text (not UTF-8)",
            409: "a concurrent request with the same Idempotency-Key got in the way; retry",
            413: "request body too large",
            422: "invalid request (the problem's `errors` name the fields), or a reused Idempotency-Key",
            429: "over the key's submissions per minute, too many of its jobs unfinished, or no room for the "
            "result in its share of the result budget or in the budget (Retry-After)",
            503: "Redis is unavailable (see Retry-After)",
        }
    ),
}


@router.post(
    "/generate",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=JobResource,
    responses=RESPONSES,
)
def generate(
    body: GenerateRequest,
    response: Response,
    queue: QueueDep,
    catalog: CatalogDep,
    settings: SettingsDep,
    caller: CallerDep,
    idempotency_key: IdempotencyKeyHeader = None,
) -> JobResource:
    """Enqueue the generation of `count` networks; poll the job at the Location header."""
    enforce_rate_limit(queue, caller.owner, settings.rate_limit_per_minute)
    resolved = _resolve(body, catalog, settings)
    size = checked_result_bytes(settings, resolved.architecture, resolved.count)  # 422 over the per-job limit
    submission = None
    if idempotency_key is not None:
        submission = IdempotentSubmission(queue, caller.owner, idempotency_key, body, settings.job_ttl)
        if (previous := submission.previous_job()) is not None:
            return _replay(previous, response)
    job = _enqueue_within_limits(queue, resolved, settings, caller, submission, size)
    if job is None:  # only with a key: a concurrent request with the same key committed first
        return _replay(submission.previous_job() if submission else None, response)
    JOBS_SUBMITTED.labels(resolved.architecture).inc()
    resource = job_resource(job)
    response.headers["Location"] = resource.url
    return resource


def _resolve(body: GenerateRequest, catalog: Catalog, settings: Settings) -> JobRequest:
    """The job request with the card's defaults filled in and a random seed if none was given (or 422)."""
    card = catalog.cards.get(body.architecture)
    if card is None:
        valid = ", ".join(catalog.names) or "none (no generator artifacts are installed)"
        raise validation_error(
            "architecture", f"unknown architecture {body.architecture!r}; valid: {valid}", body.architecture
        )
    if body.count > settings.max_count:
        raise validation_error("count", f"count must be at most {settings.max_count}", body.count)
    if body.steps is not None and body.steps > settings.max_steps:
        raise validation_error("steps", f"steps must be at most {settings.max_steps}", body.steps)
    return JobRequest(
        architecture=body.architecture,
        count=body.count,
        seed=body.seed if body.seed is not None else secrets.randbelow(SEED_MAX + 1),
        sampler=body.sampler or card.sampler.method,
        steps=body.steps or card.sampler.steps,
        validation=body.validation,
    )


def _enqueue_within_limits(
    queue: Queue,
    request: JobRequest,
    settings: Settings,
    caller: Caller,
    submission: IdempotentSubmission | None,
    size: int,
) -> Job | None:
    """Reserve a place among the caller's unfinished jobs (429 when full) and `size` bytes for the
    result (429 when there is no room), then enqueue: alone, or in one transaction with the idempotency
    record. None: another request with the same key won."""
    job_id = new_job_id()
    cap, ttl = settings.max_queued_jobs_per_key, settings.job_ttl
    reserve_queue_slot(queue, caller.owner, job_id, cap, ttl)
    ledger = ResultLedger(queue, settings)
    enqueue = partial(enqueue_generation, queue, request, settings, caller.owner, job_id)
    job = None
    try:
        ledger.reserve(caller.owner, job_id, size)
        job = enqueue() if submission is None else submission.commit(job_id, enqueue)
    finally:
        if job is None:  # not enqueued (no room, lost the race, or Redis failed): the places are free again
            release_queue_slot(queue, caller.owner, job_id)
            ledger.release(caller.owner, job_id)
    return job


def _replay(job: Job | None, response: Response) -> JobResource:
    """200 with the job an earlier request with the same Idempotency-Key made."""
    if job is None:  # its record went away between our transaction and this read (it expired)
        raise ProblemError(
            409,
            "idempotency-conflict",
            "a request with this Idempotency-Key just changed; retry",
            headers={"Retry-After": "1"},
        )
    resource = job_resource(job)
    response.status_code = status.HTTP_200_OK
    response.headers["Location"] = resource.url
    response.headers[REPLAYED_HEADER] = "true"
    return resource

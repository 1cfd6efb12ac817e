"""POST /generate: validate a request, resolve its defaults, enqueue the job."""

import secrets

from fastapi import APIRouter, Response, status

from service.deps import CatalogDep, QueueDep, SettingsDep
from service.metrics import JOBS_SUBMITTED
from service.problems import documented, validation_error
from service.queue import enqueue_generation, job_resource
from service.schemas import SEED_MAX, GenerateRequest, JobRequest, JobResource

router = APIRouter(tags=["jobs"])


@router.post(
    "/generate",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=JobResource,
    responses=documented(
        {
            401: "missing or wrong API key",
            413: "request body too large",
            422: "invalid request; the problem's `errors` name the fields",
        }
    ),
)
def generate(
    body: GenerateRequest,
    response: Response,
    queue: QueueDep,
    catalog: CatalogDep,
    settings: SettingsDep,
) -> JobResource:
    """Enqueue the generation of `count` networks; poll the job at the Location header."""
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
    resolved = JobRequest(
        architecture=body.architecture,
        count=body.count,
        seed=body.seed if body.seed is not None else secrets.randbelow(SEED_MAX + 1),
        sampler=body.sampler or card["sampler"]["method"],
        steps=body.steps or card["sampler"]["steps"],
    )
    job = enqueue_generation(queue, resolved, settings)
    JOBS_SUBMITTED.labels(resolved.architecture).inc()
    resource = job_resource(job)
    response.headers["Location"] = resource.url
    return resource

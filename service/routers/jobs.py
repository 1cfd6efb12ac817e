"""GET /jobs/{id}, GET /jobs/{id}/weights, DELETE /jobs/{id}."""

from datetime import UTC, datetime

from fastapi import APIRouter, Response, status
from fastapi.responses import FileResponse
from rq import Queue
from rq.job import Job, JobStatus

from service.deps import QueueDep, SettingsDep
from service.problems import ProblemError, documented
from service.queue import ENDED, cancel, fetch_job, job_resource
from service.results import result_path
from service.schemas import JobResource

router = APIRouter(prefix="/jobs", tags=["jobs"])

JOB_ERRORS = documented(
    {401: "missing or wrong API key", 404: "no such job (never issued, or its record expired)"}
)


def _job_or_404(queue: Queue, job_id: str) -> Job:
    job = fetch_job(queue, job_id)
    if job is None:
        raise ProblemError(404, "job-not-found", f"no job {job_id!r}")
    return job


@router.get("/{job_id}", response_model=JobResource, responses=JOB_ERRORS)
def get_job(job_id: str, queue: QueueDep) -> JobResource:
    """Status (rq's names), progress, timestamps, error and result summary of a job."""
    return job_resource(_job_or_404(queue, job_id))


@router.get(
    "/{job_id}/weights",
    response_class=FileResponse,
    responses={
        200: {"content": {"application/octet-stream": {}}, "description": "the safetensors file"},
        **JOB_ERRORS,
        **documented(
            {409: "the job has not finished (or failed, or was canceled)", 410: "the result has expired"}
        ),
    },
)
def get_weights(job_id: str, queue: QueueDep, settings: SettingsDep) -> FileResponse:
    """Stream the job's safetensors file: every tensor stacked on a leading axis of length count."""
    resource = job_resource(_job_or_404(queue, job_id), now=datetime.now(UTC))
    if resource.status != JobStatus.FINISHED.value or resource.result is None:
        raise ProblemError(
            409,
            "job-not-finished",
            f"job {job_id} is {resource.status}; weights exist once it is finished",
            headers={"Retry-After": "1"} if resource.status not in ENDED else None,
        )
    path = result_path(settings.results_dir, job_id)
    if resource.result.expired or not path.is_file():
        raise ProblemError(410, "result-expired", f"the result of job {job_id} has expired")
    request = resource.request
    filename = f"{request.architecture}-x{request.count}-seed{request.seed}-{job_id}.safetensors"
    return FileResponse(path, media_type="application/octet-stream", filename=filename)


@router.delete(
    "/{job_id}",
    response_model=JobResource,
    responses={
        **JOB_ERRORS,
        202: {"model": JobResource, "description": "the running job was asked to stop"},
        **documented({409: "the job has already ended"}),
    },
)
def delete_job(job_id: str, queue: QueueDep, response: Response) -> JobResource:
    """Cancel a queued job (200, status canceled) or ask the worker to stop a running one (202)."""
    job = _job_or_404(queue, job_id)
    if (current := job.get_status().value) in ENDED:
        raise ProblemError(409, "job-ended", f"job {job_id} has already ended ({current})")
    if cancel(queue, job) not in ENDED:
        response.status_code = status.HTTP_202_ACCEPTED
    return job_resource(job)

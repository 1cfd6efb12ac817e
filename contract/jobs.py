"""The service/worker boundary: what a generation job is asked to do and what it reports back.

The API enqueues `JOB_FUNCTION` with one argument, `JobRequest.model_dump()`; the worker
parses it with `JobRequest.model_validate`, and returns (and stores in `job.meta["result"]`)
`JobSummary.model_dump(mode="json")`, which the API parses back with `JobSummary.model_validate`.
Both sides import these classes; nothing is matched by key names.
"""

from pydantic import BaseModel, ConfigDict

from contract.result_file import ResultMetadata

JOB_FUNCTION = "worker.jobs.generate_ensemble"  # by name: the API never imports the worker (or torch)
SEED_MAX = 2**32 - 1  # seeds are unsigned 32-bit integers, everywhere


class JobRequest(BaseModel):
    """The fully resolved request a job runs (the card's defaults filled in)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    architecture: str
    count: int
    seed: int
    sampler: str
    steps: int
    validation: bool = False  # measure each network on the artifact's validation batch (a forward pass more)


class JobSummary(BaseModel):
    """What a finished job produced."""

    model_config = ConfigDict(frozen=True)

    metadata: ResultMetadata  # the result file's metadata
    size_bytes: int  # of the stored file
    expires_at: float  # unix time the result is deleted

"""The job function rq runs: generate an ensemble, store it, report progress in job.meta."""

import time
from typing import Any

from rq import get_current_job

from contract.jobs import JobRequest, JobSummary
from models.generator import GeneratedEnsemble, write_result
from worker.runtime import current_runtime

PROGRESS_EVERY_S = 0.1  # the shortest interval between two progress writes to Redis


def generate_ensemble(request: dict[str, Any]) -> dict[str, Any]:
    """Run one `contract.jobs.JobRequest`; returns (and stores in job.meta["result"]) its JobSummary.

    Progress goes to `job.meta["progress"] = {"done", "total"}` as the sampler finishes chunks (at
    most every PROGRESS_EVERY_S; the end always).
    A stop request interrupts the generation; the result is only stored if none came. The result
    store (service.storage) publishes the file whole or not at all; if it cannot (results
    directory not writable or full, bucket unreachable) the job fails with its ResultStoreError.
    """
    job = get_current_job()
    if job is None:
        raise RuntimeError("generate_ensemble runs inside an rq job")
    task = JobRequest.model_validate(request)
    runtime = current_runtime()
    generator = runtime.generator(task.architecture)

    last_saved = 0.0

    def report(done: int, total: int) -> None:
        nonlocal last_saved
        runtime.check_stop()
        if time.monotonic() - last_saved < PROGRESS_EVERY_S:
            return  # a Redis write per screening block would cost more than the progress is worth
        job.meta["progress"] = {"done": done, "total": total}
        job.save_meta()
        last_saved = time.monotonic()

    with runtime.interruptible():
        ensemble = generator.generate(
            task.count,
            task.seed,
            sampler=task.sampler,
            steps=task.steps,
            progress=report,
            evaluate=task.validation,
        )
    runtime.check_stop()
    stamped = GeneratedEnsemble(ensemble.state, ensemble.metadata.model_copy(update={"job_id": job.id}))
    stored = runtime.store.save(job.id, lambda path: write_result(path, stamped))
    summary = JobSummary(
        metadata=stamped.metadata,
        size_bytes=stored.size,
        expires_at=stored.stored_at + runtime.result_ttl,  # the same clock the expiry sweep uses
    ).model_dump(mode="json")
    job.meta["progress"] = {"done": task.count, "total": task.count}
    job.meta["result"] = summary
    job.save_meta()
    return summary

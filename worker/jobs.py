"""The job function rq runs: generate an ensemble, store it, report progress in job.meta."""

from typing import Any

from rq import get_current_job

from contract.jobs import JobRequest, JobSummary
from models.generator import GeneratedEnsemble, write_result
from worker.runtime import current_runtime


def generate_ensemble(request: dict[str, Any]) -> dict[str, Any]:
    """Run one `contract.jobs.JobRequest`; returns (and stores in job.meta["result"]) its JobSummary.

    Progress goes to `job.meta["progress"] = {"done", "total"}` as the sampler finishes chunks.
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

    def report(done: int, total: int) -> None:
        runtime.check_stop()
        job.meta["progress"] = {"done": done, "total": total}
        job.save_meta()

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

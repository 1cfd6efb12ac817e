"""The job function rq runs: generate an ensemble, store it, report progress in job.meta."""

from typing import Any

from rq import get_current_job

from models.generator import write_result
from worker.runtime import current_runtime


def generate_ensemble(architecture: str, count: int, seed: int, sampler: str, steps: int) -> dict[str, Any]:
    """Generate `count` networks of `architecture` from `seed`; returns (and stores in job.meta) the summary.

    Progress goes to `job.meta["progress"] = {"done", "total"}` as the sampler finishes chunks.
    A stop request interrupts the generation; the result is only stored if none came. The result
    store (service.storage) publishes the file whole or not at all; if it cannot (results
    directory not writable or full, bucket unreachable) the job fails with its ResultStoreError.
    """
    job = get_current_job()
    if job is None:
        raise RuntimeError("generate_ensemble runs inside an rq job")
    runtime = current_runtime()
    generator = runtime.generator(architecture)

    def report(done: int, total: int) -> None:
        runtime.check_stop()
        job.meta["progress"] = {"done": done, "total": total}
        job.save_meta()

    with runtime.interruptible():
        ensemble = generator.generate(count, seed, sampler=sampler, steps=steps, progress=report)
    runtime.check_stop()
    stored = runtime.store.save(job.id, lambda path: write_result(path, ensemble, {"job_id": job.id}))
    summary = {
        "val_accuracy": None if ensemble.val_accuracy is None else ensemble.val_accuracy.tolist(),
        "metadata": {"format": "pt", **ensemble.metadata, "job_id": job.id},
        "size_bytes": stored.size,
        "expires_at": stored.stored_at + runtime.result_ttl,  # the same clock the expiry sweep uses
    }
    job.meta["progress"] = {"done": count, "total": count}
    job.meta["result"] = summary
    job.save_meta()
    return summary

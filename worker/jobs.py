"""The job function rq runs: generate an ensemble, write it atomically, report progress in job.meta."""

from typing import Any

from rq import get_current_job

from models.generator import write_result
from service.results import result_path
from worker.runtime import current_runtime


def generate_ensemble(architecture: str, count: int, seed: int, sampler: str, steps: int) -> dict[str, Any]:
    """Generate `count` networks of `architecture` from `seed`; returns (and stores in job.meta) the summary.

    Progress goes to `job.meta["progress"] = {"done", "total"}` as the sampler finishes chunks.
    A stop request interrupts the generation; the result is only written if none came.
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
    path = result_path(runtime.results_dir, job.id)
    write_result(path, ensemble, {"job_id": job.id})
    stat = path.stat()
    summary = {
        "val_accuracy": None if ensemble.val_accuracy is None else ensemble.val_accuracy.tolist(),
        "metadata": {"format": "pt", **ensemble.metadata, "job_id": job.id},
        "size_bytes": stat.st_size,
        "expires_at": stat.st_mtime + runtime.result_ttl,  # the same clock the expiry sweep uses
    }
    job.meta["progress"] = {"done": count, "total": count}
    job.meta["result"] = summary
    job.save_meta()
    return summary

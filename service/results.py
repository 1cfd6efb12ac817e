"""Where job results live on disk: one safetensors file per job, shared by the API and the workers."""

from pathlib import Path


def result_path(results_dir: Path, job_id: str) -> Path:
    """<results_dir>/<job_id>.safetensors (job ids are rq's: letters, digits, '-' and '_' only)."""
    return Path(results_dir) / f"{job_id}.safetensors"

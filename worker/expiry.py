"""Deleting job results past their time-to-live (and temporary files a crash left behind)."""

import logging
import time
from pathlib import Path

log = logging.getLogger(__name__)


def sweep_results(
    results_dir: Path, result_ttl: float, stale_tmp_after: float, now: float | None = None
) -> int:
    """Delete `*.safetensors` older than `result_ttl` seconds and temporary files older than
    `stale_tmp_after` seconds (by modification time); returns how many files were deleted."""
    now = time.time() if now is None else now
    removed = 0
    if not Path(results_dir).is_dir():
        return removed
    for path in Path(results_dir).iterdir():
        if path.name.startswith(".") and ".tmp" in path.name:
            limit = stale_tmp_after
        elif path.suffix == ".safetensors":
            limit = result_ttl
        else:
            continue
        try:
            if now - path.stat().st_mtime >= limit:
                path.unlink()
                removed += 1
        except FileNotFoundError:
            continue  # another worker sharing the results volume got there first
    if removed:
        log.info("expired %d result file(s) in %s", removed, results_dir)
    return removed

"""Where job results live: one safetensors file per job, in a local directory or an S3 bucket.

Workers save results, the API streams them back, and workers delete them `result_ttl`
seconds after they were stored. A result appears whole or not at all: the worker writes it
to a temporary file in `results_dir` first, and the store then renames it into place (local,
`contract.files.publish`; flushed to disk in the background, and the API refuses a file whose
size is not the one its job recorded) or uploads it (S3: an object becomes visible only once
its PUT, or its multipart upload, completes), so a reader never sees part of one.

`result_store(settings)` picks the backend: `DWF_STORAGE_BACKEND=local` (the default) or `s3`.
The interface every store implements is in `service.storage_base`.
"""

import contextlib
import time
from pathlib import Path

from contract.files import flush_in_background, publish, temporary_name
from service.settings import Settings
from service.storage_base import (
    CHUNK_BYTES,
    OpenedResult,
    ResultStore,
    ResultStoreError,
    StoredResult,
    read_chunks,
    result_path,
    unwritable,
)

__all__ = [
    "CHUNK_BYTES",
    "LocalResultStore",
    "OpenedResult",
    "ResultStore",
    "ResultStoreError",
    "StoredResult",
    "result_path",
    "result_store",
    "unwritable",
]


class LocalResultStore(ResultStore):
    """Results as files `<directory>/<job_id>.safetensors`; shared between machines only through
    a shared filesystem. Expiry goes by modification time."""

    @property
    def location(self) -> str:
        return str(self.scratch_dir)

    def check(self) -> None:
        probe = temporary_name(self.scratch_dir / "probe")
        try:
            self.scratch_dir.mkdir(parents=True, exist_ok=True)
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as error:
            raise unwritable(self.scratch_dir, error) from error

    def stat(self, job_id: str) -> StoredResult | None:
        try:
            stat = result_path(self.scratch_dir, job_id).stat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as error:
            raise ResultStoreError(
                f"results directory {self.scratch_dir} is not readable ({error})"
            ) from error
        return StoredResult(stat.st_size, stat.st_mtime)

    def open(self, job_id: str) -> OpenedResult | None:
        path = result_path(self.scratch_dir, job_id)
        stored = self.stat(job_id)
        return None if stored is None else OpenedResult(stored.size, read_chunks(path), path)

    def delete(self, job_id: str) -> None:
        result_path(self.scratch_dir, job_id).unlink(missing_ok=True)

    def _results(self) -> list[Path]:
        return list(self.scratch_dir.glob("[!.]*.safetensors"))

    def expire(self, result_ttl: float, now: float | None = None) -> int:
        now = time.time() if now is None else now
        removed = 0
        for path in self._results():
            with contextlib.suppress(FileNotFoundError):  # another worker sharing the folder was first
                if now - path.stat().st_mtime >= result_ttl:
                    path.unlink()
                    removed += 1
        return removed

    def stored_bytes(self) -> int:
        total = 0
        for path in self._results():
            with contextlib.suppress(FileNotFoundError):  # deleted while counting
                total += path.stat().st_size
        return total

    def _publish(self, job_id: str, temporary: Path) -> StoredResult:
        final = result_path(self.scratch_dir, job_id)
        try:
            # the umask's mode, renamed in the same directory; the disk flush (about 0.15 s for
            # 47 MB here) runs beside the job's end and the download: a file a power loss cut
            # short is refused by its size (the job records it), never served
            publish(temporary, final, flush=False)
            stat = final.stat()
            flush_in_background(final)
        except OSError as error:
            raise unwritable(self.scratch_dir, error) from error
        return StoredResult(stat.st_size, stat.st_mtime)


def result_store(settings: Settings) -> ResultStore:
    """The store `settings` configure (S3 clients are created once per configuration)."""
    if settings.storage_backend == "s3":
        from service.storage_s3 import s3_result_store  # boto3 is imported only when S3 is used

        return s3_result_store(
            settings.s3_bucket or "",
            settings.s3_prefix,
            settings.results_dir,
            settings.s3_endpoint_url,
            settings.s3_region,
        )
    return LocalResultStore(settings.results_dir)

"""What every result store is: the interface, what it answers, its error, and the results' file names.

`service.storage` (a local directory, and the choice of backend) and `service.storage_s3` (an
S3-compatible bucket) implement it; `service.results` settles dead workers' jobs through it.
"""

import contextlib
import os
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from contract.files import is_temporary, temporary_name

CHUNK_BYTES = 1 << 20  # downloads are streamed in pieces of this size


class ResultStoreError(RuntimeError):
    """A result could not be stored or read; the message names the place and the fix."""


@dataclass(frozen=True)
class StoredResult:
    size: int  # bytes
    stored_at: float  # unix time it was stored; it expires `result_ttl` seconds later


@dataclass
class OpenedResult:
    """A result opened for download: `chunks` yields its bytes; `path` is set for a local file."""

    size: int  # bytes
    chunks: Iterator[bytes]
    path: Path | None = None


def result_path(results_dir: Path, job_id: str) -> Path:
    """<results_dir>/<job_id>.safetensors (job ids are rq's: letters, digits, '-' and '_' only)."""
    return Path(results_dir) / f"{job_id}.safetensors"


def read_chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            yield chunk


def unwritable(directory: Path, error: OSError) -> ResultStoreError:
    """The error for a results directory that cannot take a file (missing, read-only, full)."""
    return ResultStoreError(
        f"results directory {directory} is not writable or is full ({error}); make it a directory "
        f"this worker (uid {os.getuid()}) can write, with free space, or set DWF_RESULTS_DIR"
    )


class ResultStore(ABC):
    """Results by job id. Temporary files are written to `scratch_dir` (the results directory)."""

    def __init__(self, scratch_dir: Path):
        self.scratch_dir = Path(scratch_dir)

    @property
    @abstractmethod
    def location(self) -> str:
        """Where results go, for messages: a directory, or s3://bucket/prefix."""

    @abstractmethod
    def check(self) -> None:
        """Raise ResultStoreError if results cannot be stored now (a worker checks at start)."""

    @abstractmethod
    def stat(self, job_id: str) -> StoredResult | None:
        """The stored result of `job_id`, or None if there is none (never stored, or deleted)."""

    @abstractmethod
    def open(self, job_id: str) -> OpenedResult | None:
        """The result of `job_id` opened for reading, or None if there is none."""

    @abstractmethod
    def delete(self, job_id: str) -> None:
        """Delete the result of `job_id`, if there is one."""

    @abstractmethod
    def expire(self, result_ttl: float, now: float | None = None) -> int:
        """Delete results stored at least `result_ttl` seconds before `now`; returns how many."""

    @abstractmethod
    def stored_bytes(self) -> int:
        """The bytes of all results stored now (temporary files not included)."""

    @abstractmethod
    def _publish(self, job_id: str, temporary: Path) -> StoredResult:
        """Make the complete file `temporary` the result of `job_id`, atomically."""

    def save(self, job_id: str, write: Callable[[Path], None]) -> StoredResult:
        """Store a result: `write(path)` writes the whole file, once, to a new path in `scratch_dir`
        (raising OSError if it cannot); the store then publishes it under `job_id` (a rename, or an
        upload) and deletes what is left of it. A reader never sees part of a result."""
        temporary = temporary_name(result_path(self.scratch_dir, job_id))
        try:
            try:
                self.scratch_dir.mkdir(parents=True, exist_ok=True)
                write(temporary)
            except OSError as error:
                raise unwritable(self.scratch_dir, error) from error
            return self._publish(job_id, temporary)
        finally:
            with contextlib.suppress(OSError):  # gone already, or the directory is what failed
                temporary.unlink()

    def sweep_temporaries(self, older_than: float, now: float | None = None) -> int:
        """Delete temporary files in `scratch_dir` older than `older_than` seconds (a worker that
        crashed while writing left them); returns how many."""
        now = time.time() if now is None else now
        removed = 0
        with contextlib.suppress(OSError):  # no directory (yet): nothing to sweep
            for path in self.scratch_dir.iterdir():
                if is_temporary(path):
                    with contextlib.suppress(FileNotFoundError):  # a worker sharing the folder was first
                        if now - path.stat().st_mtime >= older_than:
                            path.unlink()
                            removed += 1
        return removed

"""Where job results live: one safetensors file per job, in a local directory or an S3 bucket.

Workers save results, the API streams them back, and workers delete them `result_ttl`
seconds after they were stored. A result appears whole or not at all: the worker writes it
to a temporary file in `results_dir` first, and the store then renames it into place (local)
or uploads it (S3: an object becomes visible only once its PUT, or its multipart upload,
completes), so a reader never sees part of one.

`result_store(settings)` picks the backend: `DWF_STORAGE_BACKEND=local` (the default) or `s3`.
"""

import contextlib
import os
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from service.results import result_path
from service.settings import Settings

CHUNK_BYTES = 1 << 20  # downloads are streamed in pieces of this size
TEMPORARY_MARK = ".tmp-"  # in the name of every temporary result file (models.generator.write_result's too)


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


def _read_chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            yield chunk


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
    def _publish(self, job_id: str, temporary: Path) -> StoredResult:
        """Make the complete file `temporary` the result of `job_id`, atomically."""

    def save(self, job_id: str, write: Callable[[Path], None]) -> StoredResult:
        """Store a result: `write(path)` writes the whole file to a temporary local path (raising
        OSError if it cannot), which is then published under `job_id` and deleted."""
        temporary = self.scratch_dir / f".{job_id}.safetensors{TEMPORARY_MARK}{os.getpid()}"
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
                if path.name.startswith(".") and TEMPORARY_MARK in path.name:
                    with contextlib.suppress(FileNotFoundError):  # a worker sharing the folder was first
                        if now - path.stat().st_mtime >= older_than:
                            path.unlink()
                            removed += 1
        return removed


def unwritable(directory: Path, error: OSError) -> ResultStoreError:
    """The error for a results directory that cannot take a file (missing, read-only, full)."""
    return ResultStoreError(
        f"results directory {directory} is not writable or is full ({error}); make it a directory "
        f"this worker (uid {os.getuid()}) can write, with free space, or set DWF_RESULTS_DIR"
    )


class LocalResultStore(ResultStore):
    """Results as files `<directory>/<job_id>.safetensors`; shared between machines only through
    a shared filesystem. Expiry goes by modification time."""

    @property
    def location(self) -> str:
        return str(self.scratch_dir)

    def check(self) -> None:
        probe = self.scratch_dir / f".probe{TEMPORARY_MARK}{os.getpid()}"
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
        return None if stored is None else OpenedResult(stored.size, _read_chunks(path), path)

    def delete(self, job_id: str) -> None:
        result_path(self.scratch_dir, job_id).unlink(missing_ok=True)

    def expire(self, result_ttl: float, now: float | None = None) -> int:
        now = time.time() if now is None else now
        removed = 0
        for path in self.scratch_dir.glob("[!.]*.safetensors"):
            with contextlib.suppress(FileNotFoundError):  # another worker sharing the folder was first
                if now - path.stat().st_mtime >= result_ttl:
                    path.unlink()
                    removed += 1
        return removed

    def _publish(self, job_id: str, temporary: Path) -> StoredResult:
        final = result_path(self.scratch_dir, job_id)
        try:
            os.replace(temporary, final)  # same directory, so atomic
            stat = final.stat()
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

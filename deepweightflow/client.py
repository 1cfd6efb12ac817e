"""HTTP client of the DeepWeightFlow job API (httpx; no torch needed).

    client = Client("http://127.0.0.1:8000")
    job = client.generate("mlp-fashion", count=100, seed=0)
    job.wait(progress=True)
    path = job.download("ensemble.safetensors")

Idempotent calls (GET, DELETE) are retried on connection errors and 502/503/504;
POST /generate only with an `idempotency_key`, so a retry never submits a job twice.
"""

import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx

from contract.files import atomic_write
from deepweightflow.errors import ConnectionFailed, JobFailed, WaitTimeout, error_for, parse_retry_after

DEFAULT_URL = "http://127.0.0.1:8000"
RETRY_STATUSES = {502, 503, 504}
LONG_POLL_S = 10.0  # the longest a Job.wait asks the server to hold one GET /jobs/{id}
_FILENAME = re.compile(r"""filename="?([^";]+)"?""")
T = TypeVar("T")


class Client:
    """A connection to one API server; `api_key` is sent as `Authorization: Bearer <api_key>`.

    Idempotent calls are retried `retries` times, waiting `backoff` seconds, doubling, at most 2 s.
    """

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        api_key: str | None = None,
        timeout: float = 30.0,
        retries: int = 3,
        backoff: float = 0.2,
        transport: httpx.BaseTransport | None = None,
    ):
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.retries, self.backoff = retries, backoff
        self.long_poll_s = min(LONG_POLL_S, timeout / 2)  # well inside the HTTP timeout
        self._http = httpx.Client(base_url=base_url, headers=headers, timeout=timeout, transport=transport)

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _send(self, method: str, path: str, idempotent: bool | None = None, **kwargs: Any) -> httpx.Response:
        """Send a request; raise the typed error of a non-2xx answer. Retries only idempotent requests
        (by default: every method but POST)."""
        if idempotent is None:
            idempotent = method != "POST"

        def once(last: bool) -> httpx.Response:
            response = self._http.request(method, path, **kwargs)
            if response.status_code in RETRY_STATUSES and not last:
                raise _RetryableStatus
            _raise_for_problem(response)
            return response

        return self._attempt(
            f"{method} {self._http.base_url}{path}", 1 + self.retries if idempotent else 1, once
        )

    def _attempt(self, what: str, attempts: int, once: Callable[[bool], T]) -> T:
        """`once(last)` up to `attempts` times, backing off exponentially after a transport error or
        a retryable status; the last transport error becomes ConnectionFailed."""
        for attempt in range(attempts):
            last = attempt == attempts - 1
            try:
                return once(last)
            except httpx.TransportError as error:
                if last:
                    raise ConnectionFailed(f"{what}: {error}") from error
            except _RetryableStatus:
                pass
            time.sleep(min(self.backoff * 2**attempt, 2.0))
        raise AssertionError("unreachable: the last attempt returns or raises")

    def generate(
        self,
        architecture: str,
        count: int,
        seed: int | None = None,
        sampler: str | None = None,
        steps: int | None = None,
        idempotency_key: str | None = None,
        validate: bool = False,
    ) -> "Job":
        """Submit a generation job (202); the returned Job knows its seed even when one was chosen for you.

        With `idempotency_key` (a fresh one per job, e.g. `str(uuid.uuid4())`) the submission is
        retried like a GET: the server answers a repeat with the job the key already made.
        """
        body: dict[str, Any] = {"architecture": architecture, "count": count}
        body |= {k: v for k, v in (("seed", seed), ("sampler", sampler), ("steps", steps)) if v is not None}
        if validate:  # per-network validation accuracy in the result (one more forward pass each)
            body["validation"] = True
        if idempotency_key is None:
            return Job(self, self._send("POST", "/generate", json=body).json())
        headers = {"Idempotency-Key": idempotency_key}
        return Job(self, self._send("POST", "/generate", idempotent=True, json=body, headers=headers).json())

    def job(self, job_id: str) -> "Job":
        """An existing job, by id."""
        return Job(self, self._send("GET", f"/jobs/{job_id}").json())

    def architectures(self) -> list[dict[str, Any]]:
        """The generators the server offers, with their cards."""
        return self._send("GET", "/architectures").json()["architectures"]

    def download(self, job_id: str, path: str | os.PathLike) -> Path:
        """Stream a finished job's safetensors file to `path` (a file, or a directory to keep the server's
        file name); written to a temporary name first, so `path` never holds half a file."""
        return self._attempt(
            f"download of job {job_id}",
            1 + self.retries,
            lambda _last: self._download_once(job_id, Path(path)),
        )

    def _download_once(self, job_id: str, target: Path) -> Path:
        with self._http.stream("GET", f"/jobs/{job_id}/weights") as response:
            if response.status_code >= 400:
                response.read()
                _raise_for_problem(response)
            if target.is_dir():
                match = _FILENAME.search(response.headers.get("content-disposition", ""))
                target = target / (match.group(1) if match else f"{job_id}.safetensors")

            def write(partial: Path) -> None:
                with partial.open("wb") as handle:
                    for chunk in response.iter_bytes(chunk_size=1 << 20):
                        handle.write(chunk)

            return atomic_write(target, write, flush=False)  # whole or absent, as curl -o leaves it


class _RetryableStatus(Exception):
    """A 502/503/504 answer before the last attempt: try again."""


def _raise_for_problem(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    try:
        problem = response.json()
    except ValueError:
        problem = {"detail": response.text[:500]}
    if not isinstance(problem, dict):
        problem = {"detail": str(problem)}
    raise error_for(response.status_code, problem, parse_retry_after(response.headers.get("retry-after")))


class Job:
    """One generation job as last seen; `refresh()` asks the server again."""

    def __init__(self, client: Client, data: dict[str, Any]):
        self.client = client
        self.data = data

    def __repr__(self) -> str:
        return f"Job(id={self.id!r}, status={self.status!r})"

    @property
    def id(self) -> str:
        return self.data["id"]

    @property
    def status(self) -> str:
        """rq's name: queued, started, finished, failed, stopped, canceled, ..."""
        return self.data["status"]

    @property
    def seed(self) -> int:
        return self.data["request"]["seed"]

    @property
    def progress(self) -> tuple[int, int | None]:
        return self.data["progress"]["done"], self.data["progress"]["total"]

    @property
    def error(self) -> str | None:
        return self.data.get("error")

    @property
    def result(self) -> dict[str, Any] | None:
        return self.data.get("result")

    @property
    def val_accuracy(self) -> list[float] | None:
        """Per-network validation accuracy the worker measured (once finished)."""
        return (self.result or {}).get("val_accuracy")

    @property
    def ended(self) -> bool:
        return self.status in {"finished", "failed", "stopped", "canceled"}

    def refresh(self, wait: float = 0.0, until: str = "change") -> "Job":
        """Read the job again; with `wait` (s, at most 30), the server answers when its status or
        progress changes (`until="end"`: when it ends), or after that long (a long poll)."""
        params = {"wait": wait, "until": until} if wait else None
        self.data = self.client._send("GET", f"/jobs/{self.id}", params=params).json()
        return self

    def cancel(self) -> "Job":
        """Cancel a queued job, or ask the worker to stop a running one."""
        self.data = self.client._send("DELETE", f"/jobs/{self.id}").json()
        return self

    def wait(
        self, progress: bool = False, timeout: float | None = None, poll_interval: float = 0.05
    ) -> "Job":
        """Long-poll until the job ends (the server answers within ~50 ms of the end, or, with
        `progress`, when the progress moves, or after `long_poll_s`); answers quicker than
        `poll_interval` without a change are spaced by it. With `progress`, draw a progress bar
        on stderr. Raises JobFailed unless it finished, WaitTimeout after `timeout`."""
        deadline = None if timeout is None else time.monotonic() + timeout
        bar = _ProgressBar(self) if progress else None
        try:
            self.refresh()
            while not self.ended:
                if bar:
                    bar.update(self)
                longest = self.client.long_poll_s
                remaining = longest if deadline is None else deadline - time.monotonic()
                if remaining <= 0:
                    raise WaitTimeout(f"job {self.id} still {self.status} after {timeout} s")
                asked, before = time.monotonic(), (self.status, self.data.get("progress"))
                self.refresh(wait=min(remaining, longest), until="change" if bar else "end")
                unchanged = (self.status, self.data.get("progress")) == before
                if unchanged and time.monotonic() - asked < poll_interval:
                    time.sleep(poll_interval)  # a server without long polls: do not spin
            if bar:
                bar.update(self)
        finally:
            if bar:
                bar.close()
        if self.status != "finished":
            raise JobFailed(self.id, self.status, self.error)
        return self

    def download(self, path: str | os.PathLike) -> Path:
        """Save the result's safetensors file (see `Client.download`)."""
        return self.client.download(self.id, path)


class _ProgressBar:
    """A rich progress bar over the job's `{done, total}`."""

    def __init__(self, job: Job):
        from rich.console import Console
        from rich.progress import Progress

        request = job.data["request"]
        self._label = f"{request['count']} x {request['architecture']}"
        self._progress = Progress(console=Console(stderr=True))
        self._progress.start()
        self._task = self._progress.add_task(self._label, total=None)

    def update(self, job: Job) -> None:
        done, total = job.progress
        label = f"{self._label} {job.status}"
        self._progress.update(self._task, completed=done, total=total, description=label)

    def close(self) -> None:
        self._progress.stop()

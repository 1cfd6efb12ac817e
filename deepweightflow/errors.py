"""Typed exceptions of the DeepWeightFlow client; API errors carry the server's problem details."""

import math
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any


class DeepWeightFlowError(Exception):
    """Base class of every error this package raises."""


class ConnectionFailed(DeepWeightFlowError):
    """The server could not be reached (after retries, for idempotent calls)."""


class APIError(DeepWeightFlowError):
    """The server answered with an error; `problem` is its RFC 9457 body, `detail` its explanation.

    `retry_after` is the server's `Retry-After` in seconds (None when it sent none): set by
    429 and 503 answers, and by 409 for a job still running.
    """

    def __init__(self, status: int, problem: dict[str, Any], retry_after: float | None = None):
        self.status = status
        self.problem = problem
        self.retry_after = retry_after
        self.detail = problem.get("detail") or problem.get("title") or f"HTTP {status}"
        super().__init__(f"{status}: {self.detail}")


class InvalidRequest(APIError):
    """422: the request was rejected; `errors` name the offending fields."""

    @property
    def errors(self) -> list[dict[str, Any]]:
        return self.problem.get("errors") or []


class Unauthorized(APIError):
    """401: a missing or wrong API key."""


class ForbiddenError(APIError):
    """403: the job belongs to another API key."""


class JobNotFound(APIError):
    """404: no such job."""


class JobNotFinished(APIError):
    """409: the job has no result yet (or never will: failed, stopped or canceled)."""


class ResultExpired(APIError):
    """410: the job finished, but its result has been deleted."""


class RateLimitedError(APIError):
    """429: over the key's submissions per minute, or too many of its jobs unfinished; try again
    after `retry_after` seconds."""


class ServerError(APIError):
    """5xx."""


class ServiceUnavailableError(ServerError):
    """503: Redis or the result store is unavailable for now; try again after `retry_after` seconds."""


class JobFailed(DeepWeightFlowError):
    """A waited-for job ended without a result (failed, stopped or canceled)."""

    def __init__(self, job_id: str, status: str, error: str | None):
        self.job_id, self.status, self.error = job_id, status, error
        super().__init__(f"job {job_id} {status}" + (f": {error}" if error else ""))


class WaitTimeout(DeepWeightFlowError):
    """`Job.wait(timeout=...)` ran out before the job ended."""


_BY_STATUS: dict[int, type[APIError]] = {
    401: Unauthorized,
    403: ForbiddenError,
    404: JobNotFound,
    409: JobNotFinished,
    410: ResultExpired,
    422: InvalidRequest,
    429: RateLimitedError,
    503: ServiceUnavailableError,
}


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """A `Retry-After` header in seconds: delay-seconds ("5") or an HTTP date (seconds from `now`,
    at least 0); None when absent or unreadable."""
    if value is None or not (value := value.strip()):
        return None
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    seconds = (when - (now or datetime.now(UTC))).total_seconds()
    return float(max(0, math.ceil(seconds)))


def error_for(status: int, problem: dict[str, Any], retry_after: float | None = None) -> APIError:
    """The typed exception for an error response (`retry_after`: its Retry-After, in seconds)."""
    kind = _BY_STATUS.get(status, ServerError if status >= 500 else APIError)
    return kind(status, problem, retry_after)

"""Typed exceptions of the DeepWeightFlow client; API errors carry the server's problem details."""

from typing import Any


class DeepWeightFlowError(Exception):
    """Base class of every error this package raises."""


class ConnectionFailed(DeepWeightFlowError):
    """The server could not be reached (after retries, for idempotent calls)."""


class APIError(DeepWeightFlowError):
    """The server answered with an error; `problem` is its RFC 9457 body."""

    def __init__(self, status: int, problem: dict[str, Any]):
        self.status = status
        self.problem = problem
        self.detail = problem.get("detail") or problem.get("title") or f"HTTP {status}"
        super().__init__(f"{status}: {self.detail}")


class InvalidRequest(APIError):
    """422: the request was rejected; `errors` name the offending fields."""

    @property
    def errors(self) -> list[dict[str, Any]]:
        return self.problem.get("errors") or []


class Unauthorized(APIError):
    """401: a missing or wrong API key."""


class JobNotFound(APIError):
    """404: no such job."""


class JobNotFinished(APIError):
    """409: the job has no result yet (or never will: failed, stopped or canceled)."""


class ResultExpired(APIError):
    """410: the job finished, but its result has been deleted."""


class ServerError(APIError):
    """5xx."""


class JobFailed(DeepWeightFlowError):
    """A waited-for job ended without a result (failed, stopped or canceled)."""

    def __init__(self, job_id: str, status: str, error: str | None):
        self.job_id, self.status, self.error = job_id, status, error
        super().__init__(f"job {job_id} {status}" + (f": {error}" if error else ""))


class WaitTimeout(DeepWeightFlowError):
    """`Job.wait(timeout=...)` ran out before the job ended."""


_BY_STATUS: dict[int, type[APIError]] = {
    401: Unauthorized,
    404: JobNotFound,
    409: JobNotFinished,
    410: ResultExpired,
    422: InvalidRequest,
}


def error_for(status: int, problem: dict[str, Any]) -> APIError:
    """The typed exception for an error response."""
    if status >= 500:
        return ServerError(status, problem)
    return _BY_STATUS.get(status, APIError)(status, problem)

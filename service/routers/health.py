"""Liveness (/healthz) and readiness (/readyz: Redis answers and at least one worker listens)."""

from fastapi import APIRouter
from redis.exceptions import RedisError
from rq import Worker

from service.deps import QueueDep
from service.problems import ProblemError, documented

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The API process is up."""
    return {"status": "ok"}


@router.get("/readyz", responses=documented({503: "Redis unreachable, or no worker"}))
def readyz(queue: QueueDep) -> dict[str, str | int]:
    """Jobs submitted now will run: Redis answers and a worker is registered on the queue."""
    try:
        queue.connection.ping()
        workers = Worker.count(connection=queue.connection, queue=queue)
    except RedisError as error:
        raise ProblemError(503, "not-ready", f"Redis is unreachable: {error}") from None
    if workers < 1:
        raise ProblemError(503, "not-ready", f"no worker is listening on queue {queue.name!r}")
    return {"status": "ready", "workers": workers, "queued": queue.count}

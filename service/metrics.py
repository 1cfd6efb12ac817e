"""Prometheus metrics: request counts and latencies per route, jobs submitted, queue depth, workers,
and the bytes results take (stored, reserved, and the budget)."""

import contextlib
import time

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest
from redis.exceptions import RedisError
from rq import Worker
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.deps import QueueDep, SettingsDep
from service.result_budget import ResultLedger
from service.storage import ResultStoreError, result_store

REQUESTS = Counter("dwf_http_requests_total", "HTTP requests answered", ["method", "route", "status"])
LATENCY = Histogram(
    "dwf_http_request_duration_seconds",
    "Time to answer an HTTP request",
    ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0),
)
JOBS_SUBMITTED = Counter("dwf_jobs_submitted_total", "Generation jobs enqueued", ["architecture"])
QUEUED = Gauge("dwf_queue_jobs", "Jobs waiting in the generation queue")
WORKERS = Gauge("dwf_workers", "Workers registered on the generation queue")
RESULTS_STORED = Gauge("dwf_results_stored_bytes", "Bytes of job results in the result store now")
RESULTS_RESERVED = Gauge(
    "dwf_results_reserved_bytes", "Bytes reserved for the queue's results, stored or still being computed"
)
RESULTS_BUDGET = Gauge("dwf_results_budget_bytes", "Bytes the queue's results may take together")

router = APIRouter(tags=["health"])


@router.get("/metrics", response_class=Response)
def metrics(queue: QueueDep, settings: SettingsDep) -> Response:
    """Prometheus text exposition."""
    try:
        QUEUED.set(queue.count)
        WORKERS.set(Worker.count(connection=queue.connection, queue=queue))
        ledger = ResultLedger(queue, settings)
        RESULTS_RESERVED.set(ledger.total())
        RESULTS_BUDGET.set(ledger.limits().total)
    except (RedisError, OSError):
        pass  # the request metrics are still worth serving; /readyz reports Redis being down
    with contextlib.suppress(ResultStoreError, OSError):  # a store failing now: the last value stands
        RESULTS_STORED.set(result_store(settings).stored_bytes())
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


class MetricsMiddleware:
    """Pure ASGI middleware (cheap on the hot path) labelling each request by its route template."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start, status = time.perf_counter(), 500

        async def send_and_record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            REQUESTS.labels(scope["method"], route, str(status)).inc()
            LATENCY.labels(scope["method"], route).observe(time.perf_counter() - start)

"""Load: `--requests` POST /generate at `--concurrency` over loopback HTTP (httpx), against `dwf serve`
(embedded Redis, real worker processes, uvicorn), then drain until every job has ended.

Small jobs (1-4 `mlp-digits` networks each), so the service, not the sampling, is what is loaded.
Reports every answer's status (5xx must be 0), submit latency p50/p99, submissions/s, and jobs/s
end to end: from the first submission to the last job's `ended_at`. The per-key limits stay on,
set just above what the run needs, so their bookkeeping is part of the measurement. The load
generator shares the machine's cores with the server and the workers.

Run: python -m bench.service_load [--requests 2000] [--concurrency 50] [--workers 1]
"""

import argparse
import asyncio
import os
import random
import statistics
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import httpx

from bench.common import report
from bench.service_latency import embedded_server

REPO = Path(__file__).resolve().parents[1]
ENDED = {"finished", "failed", "stopped", "canceled"}
POLL_INTERVAL_S = 0.2


@dataclass
class LoadResult:
    """What one run saw: every HTTP answer's status, submit latencies, and the jobs' final states."""

    statuses: Counter[int] = field(default_factory=Counter)  # submissions and polls alike
    transport_errors: int = 0
    latencies_s: list[float] = field(default_factory=list)  # of the submissions answered 202
    job_ids: list[str] = field(default_factory=list)
    submit_wall_s: float = 0.0
    end_to_end_s: float = 0.0  # first submission to the last job's ended_at
    final: Counter[str] = field(default_factory=Counter)  # job status once drained

    @property
    def server_errors(self) -> int:
        return sum(count for status, count in self.statuses.items() if status >= 500)


async def _submit_all(
    http: httpx.AsyncClient, architecture: str, total: int, concurrency: int, result: LoadResult
) -> None:
    rng = random.Random(0)
    bodies = iter(
        {"architecture": architecture, "count": rng.randint(1, 4), "seed": seed} for seed in range(total)
    )

    async def one_connection() -> None:
        for body in bodies:
            start = time.perf_counter()
            try:
                response = await http.post("/generate", json=body)
            except httpx.TransportError:
                result.transport_errors += 1
                continue
            result.statuses[response.status_code] += 1
            if response.status_code == 202:
                result.latencies_s.append(time.perf_counter() - start)
                result.job_ids.append(response.json()["id"])

    start = time.perf_counter()
    await asyncio.gather(*(one_connection() for _ in range(concurrency)))
    result.submit_wall_s = time.perf_counter() - start


async def _drain(http: httpx.AsyncClient, concurrency: int, timeout_s: float, result: LoadResult) -> float:
    """Poll until every job has ended; returns the latest `ended_at` (epoch seconds).

    Workers take jobs first in, first out, so only the oldest `concurrency` unfinished jobs are
    polled each round: the rest cannot have ended much before them.
    """
    pending, last_end = list(result.job_ids), 0.0
    deadline = time.monotonic() + timeout_s

    async def status(job_id: str) -> dict | None:
        try:
            response = await http.get(f"/jobs/{job_id}")
        except httpx.TransportError:
            result.transport_errors += 1
            return None
        result.statuses[response.status_code] += 1
        return response.json() if response.status_code == 200 else None

    while pending:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(pending)} jobs still unfinished after {timeout_s} s")
        head = pending[:concurrency]
        jobs = await asyncio.gather(*(status(job_id) for job_id in head))
        ended = {job["id"]: job for job in jobs if job is not None and job["status"] in ENDED}
        for job in ended.values():
            result.final[job["status"]] += 1
            last_end = max(last_end, datetime.fromisoformat(job["ended_at"]).timestamp())
        pending = [job_id for job_id in pending if job_id not in ended]
        if len(ended) < len(head):
            await asyncio.sleep(POLL_INTERVAL_S)
    return last_end


async def run_load(
    url: str, total: int, concurrency: int, architecture: str = "mlp-digits", drain_timeout_s: float = 1800
) -> LoadResult:
    """Submit `total` jobs at `concurrency`, then wait for all of them to end."""
    result = LoadResult()
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as http:
        started = time.time()
        await _submit_all(http, architecture, total, concurrency, result)
        last_end = await _drain(http, concurrency, drain_timeout_s, result)
    result.end_to_end_s = last_end - started
    return result


@contextmanager
def limits_for(total: int) -> Iterator[None]:
    """Per-key limits just above `total` submissions (the defaults would refuse a load test), in the
    environment `dwf serve` is started with."""
    values = {"DWF_RATE_LIMIT_PER_MINUTE": str(total + 1), "DWF_MAX_QUEUED_JOBS_PER_KEY": str(total + 1)}
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def summary(result: LoadResult, total: int, concurrency: int, workers: int) -> dict[str, int | float]:
    quantiles = statistics.quantiles(result.latencies_s, n=100)
    accepted = len(result.job_ids)
    return {
        "requests": total,
        "concurrency": concurrency,
        "workers": workers,
        "accepted": accepted,
        "5xx": result.server_errors,
        "transport errors": result.transport_errors,
        "submit p50 ms": quantiles[49] * 1000,
        "submit p99 ms": quantiles[98] * 1000,
        "submissions/s": accepted / result.submit_wall_s,
        "end-to-end jobs/s": accepted / result.end_to_end_s,
        "finished": result.final["finished"],
        "not finished": accepted - result.final["finished"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--architecture", default="mlp-digits")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()

    artifact = REPO / "generators" / args.architecture
    if not (artifact / "card.json").is_file():
        sys.exit(f"no generator artifact at {artifact}: build it first")
    with limits_for(args.requests), embedded_server([artifact], workers=args.workers) as url:
        result = asyncio.run(run_load(url, args.requests, args.concurrency, args.architecture))
    row = summary(result, args.requests, args.concurrency, args.workers)
    report(
        "service_load",
        f"{args.requests} x POST /generate ({args.architecture}, 1-4 networks) at concurrency "
        f"{args.concurrency}, drained by {args.workers} worker(s)",
        [row],
        {
            "architecture": args.architecture,
            "statuses": {str(status): count for status, count in sorted(result.statuses.items())},
            "final": dict(result.final),
            "submit_wall_s": result.submit_wall_s,
            "end_to_end_s": result.end_to_end_s,
        },
    )
    if (
        result.server_errors
        or result.transport_errors
        or row["not finished"]
        or row["accepted"] < args.requests
    ):
        sys.exit("load test failed: see the table")


if __name__ == "__main__":
    main()

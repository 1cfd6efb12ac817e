"""Per-key limits on POST /generate in the real Redis of tests/service/conftest.py: submissions per
minute and unfinished jobs per key, each a 429 problem with Retry-After, counted per API key."""

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import httpx
from fastapi.testclient import TestClient
from rq import Queue
from rq.job import Job, JobStatus

from service.auth import ANONYMOUS
from service.queue import SERIALIZER
from service.ratelimit import RESERVATION_GRACE_S, drop_finished, queued_key, rate_key
from service.settings import Settings
from tests.service.stack import app_for, serve_in_thread

PROBLEM = "application/problem+json"
DIGITS = {"architecture": "mlp-digits", "count": 1}


@contextmanager
def limited(settings: Settings, **limits: object) -> Iterator[TestClient]:
    with TestClient(app_for(settings.model_copy(update=limits))) as api:
        yield api


def _too_many(response: httpx.Response, kind: str) -> int:
    """Check a 429 problem of `kind`; returns its Retry-After in seconds."""
    assert response.status_code == 429, response.text
    assert response.headers["content-type"] == PROBLEM
    assert response.json()["type"] == f"/problems/{kind}"
    return int(response.headers["retry-after"])


def test_over_the_rate_limit_is_429_until_the_window_ends(settings: Settings, queue: Queue) -> None:
    with limited(settings, rate_limit_per_minute=3) as api:
        assert [api.post("/generate", json=DIGITS).status_code for _ in range(3)] == [202] * 3
        assert 1 <= _too_many(api.post("/generate", json=DIGITS), "rate-limited") <= 60
        assert api.post("/generate", json={"architecture": "nope", "count": 1}).status_code == 429
        assert queue.count == 3
        assert api.get(f"/jobs/{queue.job_ids[0]}").status_code == 200  # only submissions are limited

        queue.connection.pexpire(rate_key(queue, ANONYMOUS), 1)  # the minute is over
        time.sleep(0.05)
        assert api.post("/generate", json=DIGITS).status_code == 202


def test_rate_limits_are_counted_per_key(settings: Settings) -> None:
    with limited(settings, api_keys=["alice", "bob"], rate_limit_per_minute=2) as api:
        alice, bob = ({"Authorization": f"Bearer {name}"} for name in ("alice", "bob"))
        assert [api.post("/generate", json=DIGITS, headers=alice).status_code for _ in range(3)] == [
            202,
            202,
            429,
        ]
        assert [api.post("/generate", json=DIGITS, headers=bob).status_code for _ in range(2)] == [202, 202]


def test_zero_turns_both_limits_off(settings: Settings, queue: Queue) -> None:
    with limited(settings, rate_limit_per_minute=0, max_queued_jobs_per_key=0) as api:
        assert {api.post("/generate", json=DIGITS).status_code for _ in range(30)} == {202}
    assert queue.count == 30


def _finish(queue: Queue, job_id: str) -> None:
    Job.fetch(job_id, connection=queue.connection, serializer=SERIALIZER).set_status(JobStatus.FINISHED)


def test_unfinished_jobs_per_key_are_capped(settings: Settings, queue: Queue) -> None:
    with limited(settings, max_queued_jobs_per_key=2) as api:
        first, second = (api.post("/generate", json=DIGITS).json()["id"] for _ in range(2))
        assert _too_many(api.post("/generate", json=DIGITS), "too-many-queued-jobs") >= 1
        assert queue.count == 2

        assert api.delete(f"/jobs/{first}").status_code == 200  # a canceled job has ended
        third = api.post("/generate", json=DIGITS)
        assert third.status_code == 202
        _too_many(api.post("/generate", json=DIGITS), "too-many-queued-jobs")

        _finish(queue, second)  # as a worker would
        assert api.post("/generate", json=DIGITS).status_code == 202
        _too_many(api.post("/generate", json=DIGITS), "too-many-queued-jobs")


def test_a_replay_is_answered_even_at_the_cap(settings: Settings) -> None:
    with limited(settings, max_queued_jobs_per_key=1) as api:
        first = api.post("/generate", json=DIGITS, headers={"Idempotency-Key": "a"})
        again = api.post("/generate", json=DIGITS, headers={"Idempotency-Key": "a"})
        assert (first.status_code, again.status_code) == (202, 200)
        assert again.json()["id"] == first.json()["id"]
        _too_many(
            api.post("/generate", json=DIGITS, headers={"Idempotency-Key": "b"}), "too-many-queued-jobs"
        )


def test_the_cap_is_per_key(settings: Settings) -> None:
    with limited(settings, api_keys=["alice", "bob"], max_queued_jobs_per_key=1) as api:
        for name in ("alice", "bob"):
            headers = {"Authorization": f"Bearer {name}"}
            assert api.post("/generate", json=DIGITS, headers=headers).status_code == 202
            _too_many(api.post("/generate", json=DIGITS, headers=headers), "too-many-queued-jobs")


def test_the_cleanup_drops_ended_and_long_vanished_jobs_only(api: TestClient, queue: Queue) -> None:
    live, ended = (api.post("/generate", json=DIGITS).json()["id"] for _ in range(2))
    _finish(queue, ended)
    key = queued_key(queue, ANONYMOUS)
    now_s, _ = queue.connection.time()
    # ids with no job record: one reserved just now (its enqueue may be in flight), one long ago
    queue.connection.zadd(key, {"in-flight": now_s, "vanished": now_s - RESERVATION_GRACE_S - 1})
    assert drop_finished(queue.connection, key) == 2
    assert sorted(m.decode() for m in queue.connection.zrange(key, 0, -1)) == sorted(["in-flight", live])


def test_concurrent_submissions_never_overshoot_the_cap(settings: Settings, queue: Queue) -> None:
    """Over real HTTP, 12 threads submit at once under a cap of 3: exactly 3 jobs are accepted."""
    threads, cap = 12, 3
    start = threading.Barrier(threads)

    def submit(url: str) -> int:
        start.wait()
        return httpx.post(f"{url}/generate", json=DIGITS, timeout=30).status_code

    capped = settings.model_copy(update={"max_queued_jobs_per_key": cap})
    with serve_in_thread(app_for(capped)) as url, ThreadPoolExecutor(threads) as pool:
        statuses = sorted(pool.map(submit, [url] * threads))
    assert statuses == [202] * cap + [429] * (threads - cap)
    assert queue.count == cap

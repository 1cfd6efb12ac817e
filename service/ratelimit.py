"""Per-key limits on POST /generate, kept in Redis so that every API process enforces the same ones.

- **Rate:** at most `rate_limit_per_minute` requests per owner in a fixed 60-second window that
  opens with the owner's first request (INCR, and EXPIRE on the first, in one Lua script).
  Over it: 429 with `Retry-After` = the seconds left in the window.
- **Queued work:** at most `max_queued_jobs_per_key` jobs of one owner that have not ended.
  Each owner has a sorted set of its job ids, scored by when each was added (Redis's clock).
  A new job takes its place in the set atomically (a Lua script: add only while the set is
  below the cap) before it is enqueued, so concurrent submissions cannot overshoot. The set
  is cleaned only when it is full: ids whose job has ended or whose record has vanished are
  dropped, and the reservation is tried once more. Still full: 429 with `Retry-After`.

The owner is a key fingerprint, or `anonymous` when the API runs without keys (see `service.auth`).
Keys are per queue (`dwf:<queue>:rate:<owner>`, `dwf:<queue>:queued:<owner>`): deployments
sharing a Redis under different queue names keep separate counts.
"""

import contextlib
import math

from redis import Redis
from redis.exceptions import RedisError
from rq import Queue
from rq.job import Job

from service.problems import ProblemError
from service.queue import ENDED, SERIALIZER

RATE_WINDOW_S = 60
QUEUE_FULL_RETRY_AFTER_S = 5  # a guess at when one of the owner's jobs ends; jobs take seconds
# An id in the set whose job record does not exist yet may be a reservation whose enqueue is still
# in flight; it counts as vanished (and is dropped) only once this much older than that.
RESERVATION_GRACE_S = 60

_COUNT_IN_WINDOW = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return {n, redis.call('PTTL', KEYS[1])}
"""

_RESERVE = """
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], redis.call('TIME')[1], ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
"""


def rate_key(queue: Queue, owner: str) -> str:
    return f"dwf:{queue.name}:rate:{owner}"


def queued_key(queue: Queue, owner: str) -> str:
    return f"dwf:{queue.name}:queued:{owner}"


def enforce_rate_limit(queue: Queue, owner: str, per_minute: int) -> None:
    """Count one request of `owner`; raise a 429 problem once it is over `per_minute` (0: no limit)."""
    if per_minute == 0:
        return
    count_in_window = queue.connection.register_script(_COUNT_IN_WINDOW)
    count, ttl_ms = count_in_window(keys=[rate_key(queue, owner)], args=[RATE_WINDOW_S])
    if count > per_minute:
        retry_after = max(1, math.ceil(ttl_ms / 1000))
        raise ProblemError(
            429,
            "rate-limited",
            f"at most {per_minute} submissions per minute per API key; retry in {retry_after} s",
            headers={"Retry-After": str(retry_after)},
        )


def reserve_queue_slot(queue: Queue, owner: str, job_id: str, cap: int, ttl: int) -> None:
    """Count `job_id` among `owner`'s unfinished jobs, or raise a 429 problem at `cap` (0: no cap).

    The owner's set expires `ttl` seconds after its last reservation.
    """
    if cap == 0:
        return
    key, connection = queued_key(queue, owner), queue.connection
    reserve = connection.register_script(_RESERVE)
    if reserve(keys=[key], args=[cap, job_id, ttl]):
        return
    drop_finished(connection, key)
    if reserve(keys=[key], args=[cap, job_id, ttl]):
        return
    raise ProblemError(
        429,
        "too-many-queued-jobs",
        f"at most {cap} unfinished jobs per API key; wait for some to end, or cancel some",
        headers={"Retry-After": str(QUEUE_FULL_RETRY_AFTER_S)},
    )


def release_queue_slot(queue: Queue, owner: str, job_id: str) -> None:
    """Give back a reservation whose job was not enqueued (best effort: a cleanup drops it anyway)."""
    with contextlib.suppress(RedisError):
        queue.connection.zrem(queued_key(queue, owner), job_id)


def drop_finished(connection: Redis, key: str) -> int:
    """Remove the ids of ended and vanished jobs from the set at `key`; returns how many."""
    entries = connection.zrange(key, 0, -1, withscores=True)
    if not entries:
        return 0
    now_s, _ = connection.time()
    ids = [member.decode() for member, _ in entries]
    jobs = Job.fetch_many(ids, connection=connection, serializer=SERIALIZER)
    stale = [
        job_id
        for job_id, (_, added_s), job in zip(ids, entries, jobs, strict=True)
        if (job is None and now_s - added_s > RESERVATION_GRACE_S)
        or (job is not None and job.get_status(refresh=False).value in ENDED)
    ]
    if stale:
        connection.zrem(key, *stale)
    return len(stale)

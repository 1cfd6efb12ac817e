"""`Idempotency-Key` on POST /generate: the same key and body give the same job, never a second one.

A record `dwf:<queue>:idempotency:<owner>:<key>` holds `<body hash> <job id>` and lives `job_ttl`
seconds (the job's record lives at least that long after the job ends, so a live record
always finds its job). The body hash is taken over the request as submitted, before a
random seed is chosen, so a replay without a seed finds the job with the seed chosen the
first time.

The record and the job are written in one Redis transaction (WATCH the record, then MULTI:
SET the record and enqueue the job, EXEC): of two concurrent identical requests exactly one
commits, and the other, its transaction aborted, answers with the winner's job. A job never
exists without its record, nor a record without its job.
"""

import hashlib
import json
from collections.abc import Callable
from typing import Annotated

from fastapi import Header
from redis.client import Pipeline
from redis.exceptions import WatchError
from rq import Queue
from rq.job import Job

from service.problems import ProblemError
from service.queue import fetch_job
from service.schemas import GenerateRequest

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
MAX_KEY_LENGTH = 255
# printable ASCII, without the blanks at either end that HTTP would strip in transit
KEY_PATTERN = r"^[\x21-\x7e]([\x20-\x7e]*[\x21-\x7e])?$"

IdempotencyKeyHeader = Annotated[
    str | None,
    Header(
        alias=HEADER,
        min_length=1,
        max_length=MAX_KEY_LENGTH,
        pattern=KEY_PATTERN,
        description=(
            "makes the submission safe to retry: the same key and body within the job TTL answer "
            f"200 with the first job and `{REPLAYED_HEADER}: true`; the same key with another body is 422. "
            f"At most {MAX_KEY_LENGTH} printable ASCII characters, unique per request (a UUID, say)."
        ),
    ),
]


def body_hash(body: GenerateRequest) -> str:
    """SHA-256 of the request's canonical JSON (sorted keys, absent and null fields alike)."""
    canonical = json.dumps(body.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


class IdempotentSubmission:
    """One POST /generate carrying an Idempotency-Key, scoped to its caller's `owner`."""

    def __init__(self, queue: Queue, owner: str, key: str, body: GenerateRequest, ttl: int):
        self.queue, self.key, self.ttl = queue, key, ttl
        self.record_key = f"dwf:{queue.name}:idempotency:{owner}:{key}"
        self.body_hash = body_hash(body)

    def previous_job(self) -> Job | None:
        """The job an earlier request with this key made, or None if there was none (or it is gone).

        Raises a 422 problem when that request had a different body.
        """
        return self._job_of(self.queue.connection.get(self.record_key))

    def commit(self, job_id: str, enqueue: Callable[[Pipeline], Job]) -> Job | None:
        """Write the record for `job_id` and run `enqueue(pipeline)` in one transaction.

        Returns the enqueued job, or None when another request with this key committed first
        (then `previous_job()` has its job).
        """
        with self.queue.connection.pipeline() as pipe:
            try:
                pipe.watch(self.record_key)
                if self._job_of(pipe.get(self.record_key)) is not None:
                    return None
                pipe.multi()
                pipe.set(self.record_key, f"{self.body_hash} {job_id}", ex=self.ttl)
                job = enqueue(pipe)
                pipe.execute()
            except WatchError:
                return None
        return job

    def _job_of(self, record: bytes | None) -> Job | None:
        if record is None:
            return None
        recorded_hash, job_id = record.decode().split(" ", 1)
        if recorded_hash != self.body_hash:
            raise ProblemError(
                422,
                "idempotency-key-reused",
                f"{HEADER} {self.key!r} was already used with a different request body; "
                "use a new key for a new request",
            )
        return fetch_job(self.queue, job_id)

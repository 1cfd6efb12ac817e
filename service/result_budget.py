"""Bounded disk for job results: each job's result size is known when it is submitted, and results
together stay within a budget, each API key within its share of it.

- **Size of a job's result:** `count` networks of the generator's architecture, each as many bytes
  as the tensors of its `template.safetensors` (read from the file's header, no torch), plus the
  file's header. Over `max_result_bytes`: 422 naming the limit.
- **Budget:** `result_budget_bytes` for all results of the queue together, by default half of
  what the results directory's file system could hold for them (its free space plus what the
  results counted here take). Each owner (API key) may take `result_budget_owner_share` of it;
  without API keys there is one owner, who may take it all.
- **Ledger:** a job's bytes are reserved in Redis when it is submitted, in one Lua script that
  checks both limits, so concurrent submissions (from any number of API processes) cannot
  overshoot. A reservation is released once the job can no longer hold a result: it failed, was
  stopped or canceled, its result expired (the file is deleted then),
  or its record is gone. That is looked at only when a reservation does not fit, the way the
  per-key queue cap is cleaned (`service.ratelimit`).
- **When full:** the owner's expired results go first (above), then its oldest finished results
  are evicted (deleted, and their jobs then show the result expired); if the job still does not
  fit, the submission is refused with 429 and Retry-After (a 5xx would say the server failed; it
  is the caller's share, or everyone's budget, that is full). A job bigger than a whole share
  can never fit: 422, naming the share. Nothing is ever half-written:
  stores publish whole files (`service.storage`), and a job that fits its reservation finds the
  space free.

Keys are per queue: `dwf:<queue>:results:{bytes,owners,owner-bytes,total}` and
`dwf:<queue>:results:of:<owner>` (the owner's job ids by reservation time, in microseconds).
"""

import contextlib
import json
import logging
import shutil
import struct
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from rq import Queue
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus

from service.problems import ProblemError, validation_error
from service.settings import Settings
from service.storage import result_store

log = logging.getLogger(__name__)

# The result file's header: the template's, each shape one entry longer, and the metadata (the
# input contract, the request, one validation accuracy per network); generous on purpose.
HEADER_BYTES = 64 * 1024
HEADER_BYTES_PER_NETWORK = 32
MAX_HEADER_BYTES = 100 * 2**20  # safetensors' own limit on a header
DTYPE_BYTES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "U16": 2, "I16": 2, "F16": 2, "BF16": 2,
    "U32": 4, "I32": 4, "F32": 4, "U64": 8, "I64": 8, "F64": 8,
}  # fmt: skip
# A reservation whose job record does not exist yet may be an enqueue still in flight: it counts as
# vanished only once this much older (as in service.ratelimit).
RESERVATION_GRACE_S = 60
FULL_RETRY_AFTER_S = 60  # a guess at when room frees up: jobs finish and results expire, or are downloaded
NO_RESULT = frozenset(s.value for s in (JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED))

_RESERVE = """
local total = tonumber(redis.call('GET', KEYS[4]) or '0')
local mine = tonumber(redis.call('HGET', KEYS[3], ARGV[2]) or '0')
local size = tonumber(ARGV[3])
if total + size > tonumber(ARGV[4]) then return {1, total, mine} end
if mine + size > tonumber(ARGV[5]) then return {2, total, mine} end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('HINCRBY', KEYS[3], ARGV[2], ARGV[3])
redis.call('INCRBY', KEYS[4], ARGV[3])
local now = redis.call('TIME')
redis.call('ZADD', KEYS[5], now[1] .. string.format('%06d', now[2]), ARGV[1])
return {0, total + size, mine + size}
"""

_RELEASE = """
local size = redis.call('HGET', KEYS[1], ARGV[1])
if not size then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
if tonumber(redis.call('HINCRBY', KEYS[3], ARGV[2], -tonumber(size))) <= 0 then
    redis.call('HDEL', KEYS[3], ARGV[2])
end
redis.call('DECRBY', KEYS[4], size)
redis.call('ZREM', KEYS[5], ARGV[1])
return tonumber(size)
"""


def tensor_bytes(path: Path) -> int:
    """The bytes of the tensors in the safetensors file `path`, from its header alone (8 bytes
    little-endian header length, then the JSON header: dtype, shape and data_offsets per tensor)."""
    with Path(path).open("rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        if length > MAX_HEADER_BYTES:
            raise ValueError(f"{path}: a safetensors header of {length} bytes")
        header = json.loads(handle.read(length))
    total = 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        start, end = entry["data_offsets"]
        count = 1
        for dimension in entry["shape"]:
            count *= dimension
        if count * DTYPE_BYTES[entry["dtype"]] != end - start:
            raise ValueError(
                f"{path}: tensor {name} {entry['dtype']}{entry['shape']} spans {end - start} bytes"
            )
        total += end - start
    return total


@lru_cache(maxsize=64)
def _network_bytes(template: Path, mtime_ns: int, size: int) -> int:
    return tensor_bytes(template)


def network_bytes(generators_dir: Path, architecture: str) -> int:
    """Bytes of one network of generator `architecture` (0, logged, if its template is unreadable:
    its jobs fail without a result then)."""
    template = Path(generators_dir) / architecture / "template.safetensors"
    try:
        stat = template.stat()
        return _network_bytes(template, stat.st_mtime_ns, stat.st_size)
    except (OSError, ValueError, KeyError, TypeError) as error:
        log.warning("size of a %s network unknown: %s unreadable (%s)", architecture, template, error)
        return 0


def result_bytes(generators_dir: Path, architecture: str, count: int) -> int:
    """At least the size of the result file of `count` networks of `architecture`."""
    per_network = network_bytes(generators_dir, architecture)
    return HEADER_BYTES + count * (per_network + HEADER_BYTES_PER_NETWORK)


def checked_result_bytes(settings: Settings, architecture: str, count: int) -> int:
    """The result size of a request, or 422 (naming `count` and the limit) over `max_result_bytes`."""
    size = result_bytes(settings.generators_dir, architecture, count)
    if size > settings.max_result_bytes:
        per_network = max(network_bytes(settings.generators_dir, architecture), 1)
        most = max((settings.max_result_bytes - HEADER_BYTES) // (per_network + HEADER_BYTES_PER_NETWORK), 0)
        raise validation_error(
            "count",
            f"{count} x {architecture} would store {_size(size)}, over the per-job limit of "
            f"{_size(settings.max_result_bytes)} (max_result_bytes): at most {most} networks per job",
            count,
        )
    return size


def _size(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError


def _free_bytes(directory: Path) -> int:
    """Free space (for unprivileged users) of the file system that holds or will hold `directory`."""
    directory = Path(directory).absolute()
    while not directory.exists() and directory != directory.parent:
        directory = directory.parent
    return shutil.disk_usage(directory).free


@dataclass(frozen=True)
class Limits:
    total: int  # bytes all results of the queue may take
    owner: int  # bytes one owner's results may take


class ResultLedger:
    """The result bytes reserved per job and owner, in Redis (see the module's docstring)."""

    def __init__(self, queue: Queue, settings: Settings):
        self.queue, self.settings, self.redis = queue, settings, queue.connection
        prefix = f"dwf:{queue.name}:results"
        self.sizes, self.owners, self.owner_bytes = (
            f"{prefix}:bytes",
            f"{prefix}:owners",
            f"{prefix}:owner-bytes",
        )
        self.total_key, self.of_prefix = f"{prefix}:total", f"{prefix}:of:"

    def _keys(self, owner: str) -> list[str]:
        return [self.sizes, self.owners, self.owner_bytes, self.total_key, self.of_prefix + owner]

    def total(self) -> int:
        """Bytes reserved for the queue's results (stored, or being computed)."""
        return int(self.redis.get(self.total_key) or 0)

    def limits(self) -> Limits:
        settings = self.settings
        total = settings.result_budget_bytes
        if total is None:
            total = (_free_bytes(settings.results_dir) + self.total()) // 2
        share = settings.result_budget_owner_share if settings.all_api_keys else 1.0
        return Limits(total, int(total * share))

    def reserve(self, owner: str, job_id: str, size: int) -> None:
        """Reserve `size` bytes for the result of `owner`'s job `job_id`, making room by releasing
        what no job needs any more and evicting the owner's oldest results; else 429 (422 for a job
        bigger than a whole share)."""
        limits = self.limits()
        if size > limits.owner:
            raise validation_error(
                "count",
                f"a result of {_size(size)} is more than one API key's share of the stored results "
                f"({_size(limits.owner)}: result_budget_owner_share of result_budget_bytes); ask for "
                "fewer networks",
                None,
            )
        if self._try(owner, job_id, size, limits) is None:
            return
        self.release_unneeded()
        limits = self.limits()
        while (refusal := self._try(owner, job_id, size, limits)) is not None:
            evictable = self._finished_results(owner)
            total, mine = self.total(), int(self.redis.hget(self.owner_bytes, owner) or 0)
            needed = max(total + size - limits.total, mine + size - limits.owner)
            if not evictable or sum(bytes_ for _, bytes_ in evictable) < needed:
                raise self._full(refusal)  # evicting all of the owner's results would not make room
            for evicted, bytes_ in evictable:
                self._evict(owner, evicted)
                needed -= bytes_
                if needed <= 0:
                    break

    def _try(self, owner: str, job_id: str, size: int, limits: Limits) -> str | None:
        """Reserve if both limits allow it: None, else why not."""
        outcome, total, mine = self.redis.eval(
            _RESERVE, 5, *self._keys(owner), job_id, owner, size, limits.total, limits.owner
        )
        if outcome == 0:
            return None
        if outcome == 1:
            return (
                f"stored and pending results take {_size(total)} of the result budget of "
                f"{_size(limits.total)}; this job needs {_size(size)} more; retry later"
            )
        return (
            f"the stored and pending results of this API key take {_size(mine)} of its share of "
            f"{_size(limits.owner)}; this job needs {_size(size)} more: wait for its jobs to finish "
            "and their results to expire"
        )

    def _full(self, detail: str) -> ProblemError:
        return ProblemError(
            429, "result-storage-full", detail, headers={"Retry-After": str(FULL_RETRY_AFTER_S)}
        )

    def release(self, owner: str, job_id: str) -> int:
        """Give back the bytes reserved for `job_id` (nothing if none are); returns how many."""
        return int(self.redis.eval(_RELEASE, 5, *self._keys(owner), job_id, owner))

    def _statuses(self, job_ids: list[str]) -> list[tuple[str | None, float | None]]:
        """(status, when its result expires) of each job: (None, None) where there is no record."""
        with self.redis.pipeline(transaction=False) as pipeline:
            for job_id in job_ids:
                pipeline.hmget(Job.key_for(job_id), "status", "meta")
            answers = pipeline.execute()
        statuses = []
        for status, meta in answers:
            expires_at = None
            # no result (yet), or not a record of ours: None
            with contextlib.suppress(ValueError, TypeError, KeyError, AttributeError):
                expires_at = (
                    float(self.queue.serializer.loads(meta)["result"]["expires_at"]) if meta else None
                )
            statuses.append((status.decode() if status else None, expires_at))
        return statuses

    def release_unneeded(self, now: float | None = None) -> int:
        """Release every reservation no job needs any more (deleting expired results); returns how many."""
        now = time.time() if now is None else now
        owners = {k.decode(): v.decode() for k, v in self.redis.hgetall(self.owners).items()}
        job_ids = list(owners)
        released = 0
        for job_id, (status, expires_at) in zip(job_ids, self._statuses(job_ids), strict=True):
            owner = owners[job_id]
            if status is None:
                reserved_at = self.redis.zscore(self.of_prefix + owner, job_id)  # microseconds
                if reserved_at is not None and now - reserved_at / 1e6 < RESERVATION_GRACE_S:
                    continue  # an enqueue may still be in flight
            elif status == JobStatus.FINISHED.value:
                if expires_at is None or now < expires_at:
                    continue
            elif status not in NO_RESULT:
                continue  # queued, started, deferred, scheduled: its result is still to come
            if status is None or status == JobStatus.FINISHED.value:
                result_store(self.settings).delete(job_id)
            released += self.release(owner, job_id) > 0
        return released

    def _finished_results(self, owner: str) -> list[tuple[str, int]]:
        """The owner's jobs holding a result, with their reserved bytes, oldest reservation first."""
        job_ids = [j.decode() for j in self.redis.zrange(self.of_prefix + owner, 0, -1)]
        if not job_ids:
            return []
        sizes = self.redis.hmget(self.sizes, job_ids)
        return [
            (job_id, int(size))
            for job_id, size, (status, _) in zip(job_ids, sizes, self._statuses(job_ids), strict=True)
            if status == JobStatus.FINISHED.value and size is not None
        ]

    def _evict(self, owner: str, job_id: str) -> None:
        """Delete the result of `job_id` before its time; its job then shows the result expired."""
        result_store(self.settings).delete(job_id)
        try:
            job = Job.fetch(job_id, connection=self.redis, serializer=self.queue.serializer)
        except NoSuchJobError:  # its record went away meanwhile: nothing to mark
            job = None
        if job is not None and isinstance(job.meta.get("result"), dict):
            job.meta["result"]["expires_at"] = min(job.meta["result"].get("expires_at", 0) or 0, time.time())
            job.save_meta()
        self.release(owner, job_id)
        log.info("evicted the result of job %s (owner %s) to make room for a new job", job_id, owner)


def stored_bytes_metrics(queue: Queue, settings: Settings) -> tuple[int, int, Limits]:
    """(bytes stored in the result store, bytes reserved in the ledger, the limits) for /metrics."""
    ledger = ResultLedger(queue, settings)
    return result_store(settings).stored_bytes(), ledger.total(), ledger.limits()

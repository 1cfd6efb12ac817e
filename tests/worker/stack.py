"""Helpers for tests that run real processes: worker (and API) subprocesses, a real S3 server
(moto's, over HTTP), and polling until something happens.

(Redis comes from `service.embedded.embedded_redis`; free ports and HTTP readiness from
tests/service/stack.py.)
"""

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from tests.service.stack import free_port

REPO = Path(__file__).resolve().parents[2]
ARTIFACT = REPO / "generators" / "mlp-digits"  # the shipped generator the process tests run
T = TypeVar("T")

# what a test may not inherit from the developer's shell: it would point the processes elsewhere
_FOREIGN = {"REDIS_URL", "DWF_REDIS_URL", "AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"}


def process_env(**env: str) -> dict[str, str]:
    """The environment of a worker or API process: this one's, on one CPU thread, plus `env`."""
    base = {k: v for k, v in os.environ.items() if k not in _FOREIGN and not k.startswith("DWF_")}
    return base | {"DWF_DEVICE": "cpu", "OMP_NUM_THREADS": "1"} | env


@contextmanager
def started(module: str, env: dict[str, str], log: Path) -> Iterator[subprocess.Popen]:
    """`python -m <module>` (worker or service) with `env`, its output appended to `log`;
    stopped on exit (SIGTERM, then SIGKILL)."""
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", module], env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        yield process
    except BaseException:
        print(f"--- {log} (last 3000 characters) ---\n{log.read_text(errors='replace')[-3000:]}")
        raise
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def wait_for(condition: Callable[[], T], timeout: float, what: str, interval: float = 0.2) -> T:
    """Poll `condition()` until it returns something truthy (returned), failing after `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@contextmanager
def moto_s3(bucket: str) -> Iterator[str]:
    """moto's S3 server on a free loopback port, with `bucket` created; yields its endpoint URL.

    Sets fake AWS credentials in this process's environment for the duration (moto accepts any).
    """
    import boto3
    from moto.server import ThreadedMotoServer

    credentials = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    saved = {k: os.environ.get(k) for k in credentials}
    os.environ.update(credentials)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    try:
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket=bucket)
        yield endpoint
    finally:
        server.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value

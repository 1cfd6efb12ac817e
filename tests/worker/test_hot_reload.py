"""A worker follows its generators folder: a new or replaced artifact is served at the next job,
and a generator is always loaded from one published version of its folder, never a mix.

Uses the shipped artifacts generators/mlp-digits and generators/mlp-breast-cancer (skipped,
saying so, without them).
"""

import shutil
from pathlib import Path

import pytest

import models.generator.pipeline
from contract.card import card_stamp
from contract.files import replace_directory
from models.flow import load_velocity
from models.generator import Generator
from service.settings import Settings
from tests.worker.stack import ARTIFACT
from worker.runtime import load_runtime

TABULAR = ARTIFACT.parent / "mlp-breast-cancer"
pytestmark = pytest.mark.skipif(
    not all((a / "card.json").is_file() for a in (ARTIFACT, TABULAR)),
    reason=f"generator artifacts {ARTIFACT} and {TABULAR} are needed",
)


def publish(source: Path, target: Path) -> None:
    """Install a copy of the artifact `source` as `target`, the way builds publish (atomically)."""

    def fill(staging: Path) -> None:
        for path in source.iterdir():
            shutil.copyfile(path, staging / path.name)

    replace_directory(target, fill)


def test_a_new_or_replaced_artifact_is_served_at_the_next_job(tmp_path: Path) -> None:
    root = tmp_path / "generators"
    root.mkdir()
    runtime = load_runtime(Settings(generators_dir=root, results_dir=tmp_path / "results", device="cpu"))
    with pytest.raises(ValueError, match="no generator 'hot'"):
        runtime.generator("hot")

    publish(ARTIFACT, root / "hot")
    first = runtime.generator("hot")
    assert first.architecture.name == "mlp-digits"
    assert runtime.generator("hot") is first  # unchanged: not loaded again
    assert first.generate(2, seed=1).state["layers.0.weight"].shape == (2, 32, 64)

    publish(TABULAR, root / "hot")
    replaced = runtime.generator("hot")
    assert replaced is not first and replaced.architecture.name == "mlp-breast-cancer"
    assert replaced.generate(2, seed=1).state["layers.0.weight"].shape == (2, 16, 30)

    shutil.rmtree(root / "hot")  # removed: jobs already queued for it are still served
    assert runtime.generator("hot") is replaced


def test_a_load_that_overlaps_a_replacement_is_repeated_not_mixed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The folder is replaced after the card, template and encoder were read and before the flow
    is: the generator must come whole from the new version, not mlp-digits' card with its flow."""
    target = tmp_path / "swapped"
    publish(ARTIFACT, target)
    reads = []

    def load_velocity_mid_swap(path: Path, device: object):
        reads.append(path)
        if len(reads) == 1:
            publish(TABULAR, target)
        return load_velocity(path, device=device)

    monkeypatch.setattr(models.generator.pipeline, "load_velocity", load_velocity_mid_swap)
    generator = Generator.load(target, device="cpu")
    assert len(reads) == 2  # the overlapping read was thrown away
    assert generator.card.architecture.name == generator.architecture.name == "mlp-breast-cancer"
    assert generator.stamp == card_stamp(target)
    ensemble = generator.generate(2, seed=0, screen=False)
    assert ensemble.state["layers.0.weight"].shape == (2, 16, 30)

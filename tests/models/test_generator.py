"""The whole DeepWeightFlow pipeline on real data (sklearn digits), small enough for CI:
zoo -> canonicalize -> encoder + flow -> artifact -> generate -> accurate networks."""

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from models.build_generator import GeneratorRecipe, build_from_zoo
from models.flow import FlowTrainConfig
from models.generator import Generator, residual_noise, write_result
from models.store import ArtifactError, discover_generators, read_card
from models.weightspace import WeightLayout, batched_evaluate
from models.zoo.build import train_zoo
from models.zoo.canonical import canonicalize_zoo, load_canonical_zoo
from models.zoo.datasets import load_dataset
from models.zoo.train import default_recipe

RECIPE = GeneratorRecipe(
    n_components=16, hidden=128, train=FlowTrainConfig(iterations=600, batch_size=32, device="cpu"), steps=8
)


@pytest.fixture(scope="module")
def artifact(tmp_path_factory) -> tuple[Path, Path]:
    """A 24-member mlp-digits zoo, canonicalized, and a generator built from it."""
    root = tmp_path_factory.mktemp("pipeline")
    zoo_dir = root / "zoo"
    train_zoo("mlp-digits", 24, replace(default_recipe("mlp-digits"), epochs=8), zoo_dir, chunk_size=24)
    canonicalize_zoo(zoo_dir, ("medoid",))
    out = build_from_zoo(zoo_dir, root / "generators" / "mlp-digits", RECIPE)
    return out, zoo_dir


def test_generated_networks_are_accurate_on_the_test_set(artifact):
    directory, _ = artifact
    generator = Generator.load(directory, device="cpu")
    ensemble = generator.generate(32, seed=7)
    assert ensemble.state.keys() == generator.template.keys()
    assert all(v.shape[0] == 32 for v in ensemble.state.values())
    test = load_dataset("digits").test
    accuracy = batched_evaluate(generator.module, ensemble.state, test.images, test.labels)[1]
    assert accuracy.mean() > 0.6, f"chance is 0.1; generated mean accuracy {accuracy.mean():.3f}"
    assert ensemble.val_accuracy is not None and ensemble.val_accuracy.mean() > 0.6
    assert len(set(accuracy.tolist())) > 1, "networks should differ from each other"


def test_same_seed_is_bit_identical_and_seeds_differ(artifact):
    generator = Generator.load(artifact[0], device="cpu")
    first = generator.generate(5, seed=3, evaluate=False).state
    second = generator.generate(5, seed=3, evaluate=False).state
    other = generator.generate(5, seed=4, evaluate=False).state
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert not torch.equal(first["layers.0.weight"], other["layers.0.weight"])


def test_result_file_format(artifact, tmp_path):
    generator = Generator.load(artifact[0], device="cpu")
    ensemble = generator.generate(4, seed=1)
    path = tmp_path / "result.safetensors"
    write_result(path, ensemble, {"job_id": "abc"})
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata()
    assert metadata["format"] == "pt" and metadata["job_id"] == "abc"
    assert metadata["architecture"] == "mlp-digits" and metadata["count"] == "4" and metadata["seed"] == "1"
    assert json.loads(metadata["val_accuracy"]) == pytest.approx(ensemble.val_accuracy.tolist(), abs=1e-6)
    tensors = load_file(str(path))
    assert all(torch.equal(tensors[k], ensemble.state[k]) for k in tensors)
    assert not list(tmp_path.glob(".*tmp*")), "no temporary file is left behind"


def test_card_records_zoo_and_recipe(artifact):
    card = read_card(artifact[0])
    assert card["name"] == "mlp-digits" and card["architecture"]["name"] == "mlp-digits"
    assert card["zoo"]["size"] == 24 and card["zoo"]["template"] == "medoid"
    assert card["encoder"]["code_dim"] == 16
    assert {k: card["sampler"][k] for k in ("method", "steps", "residual_noise")} == {
        "method": "rk4",
        "steps": 8,
        "residual_noise": 0.0,
    }
    # the zoo spread is the median distance from each member to its nearest other member
    zoo = load_canonical_zoo(artifact[1]).zoo
    flat = WeightLayout.from_module(zoo.architecture.build()).flatten_stacked(zoo.stacked)
    spread = torch.cdist(flat.double(), flat.double()).fill_diagonal_(float("inf")).min(1).values.median()
    assert card["sampler"]["zoo_spread"] == pytest.approx(spread.item(), rel=1e-5)
    assert (artifact[0] / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert discover_generators(artifact[0].parent) == {"mlp-digits": artifact[0]}


def test_corrupted_or_incomplete_artifact_is_refused(artifact, tmp_path):
    import shutil

    broken = tmp_path / "mlp-digits"
    shutil.copytree(artifact[0], broken)
    flow = broken / "flow.safetensors"
    data = bytearray(flow.read_bytes())
    data[-1] ^= 0xFF
    flow.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="flow.safetensors does not match the sha256"):
        Generator.load(broken)
    flow.unlink()
    with pytest.raises(ArtifactError, match="flow.safetensors is missing"):
        Generator.load(broken)
    with pytest.raises(ArtifactError, match="card.json is missing"):
        Generator.load(tmp_path / "nothing")


def test_evaluation_table_baselines_and_record(artifact, tmp_path):
    import shutil

    from models.evaluation import evaluate_generator, record_evaluation

    directory = tmp_path / "mlp-digits"
    shutil.copytree(artifact[0], directory)
    generator = Generator.load(directory, device="cpu")
    zoo = load_canonical_zoo(artifact[1]).zoo.stacked
    evaluation = evaluate_generator(generator, zoo, load_dataset("digits").test, count=20, steps_sweep=(1, 4))
    rows = evaluation.table["rows"]
    assert rows["zoo"]["novelty_ratio"] == 1.0 and rows["zoo"]["count"] == 24
    noise = next(name for name in rows if name.startswith("noise@"))
    # The noise baseline is put at the generated networks' novelty ratio.
    assert rows[noise]["novelty_ratio"] == pytest.approx(rows["generated"]["novelty_ratio"], rel=0.25)
    assert {"pca-gaussian", "generated"} <= rows.keys() and any(n.startswith("interp@") for n in rows)
    assert [row["steps"] for row in evaluation.table["steps_sweep"]] == [1, 4]
    assert rows["generated"]["mean"] > 60
    record_evaluation(directory, evaluation)
    card = read_card(directory)  # still verifies: the hashed files were not touched
    assert card["evaluation"]["rows"]["generated"]["mean"] == rows["generated"]["mean"]
    assert card["generated"]["test_accuracy"]["mean"] == rows["generated"]["mean"]
    assert (directory / "evaluation.png").read_bytes()[:4] == b"\x89PNG"


def with_residual_noise(source: Path, destination: Path, ratio: float) -> Generator:
    """A copy of the artifact whose card asks for residual noise at novelty ratio `ratio`."""
    import shutil

    from models.store import update_card

    shutil.copytree(source, destination)
    update_card(destination, {"sampler": {**read_card(source)["sampler"], "residual_noise": ratio}})
    return Generator.load(destination, device="cpu")


def test_residual_noise_is_isotropic_at_the_card_ratio_and_seeded(artifact, tmp_path):
    plain = Generator.load(artifact[0], device="cpu")
    noisy = with_residual_noise(artifact[0], tmp_path / "mlp-digits", 0.2)
    spread, dim = noisy.card["sampler"]["zoo_spread"], noisy.layout.dim
    assert plain.residual_sigma == 0 and noisy.residual_sigma == pytest.approx(0.2 * spread / dim**0.5)
    flow_only = noisy.sample_flat(6, seed=2, residual=False)
    assert torch.equal(flow_only, plain.sample_flat(6, seed=2)), "without residual noise: the flow's samples"
    offsets = noisy.sample_flat(6, seed=2) - flow_only
    # each network moves by ~0.2 zoo spreads, in a direction of its own
    assert offsets.norm(dim=1) == pytest.approx(torch.full((6,), 0.2 * spread), rel=0.1)
    assert offsets.mean().abs() < 0.1 * noisy.residual_sigma
    cosines = torch.nn.functional.normalize(offsets, dim=1) @ torch.nn.functional.normalize(offsets, dim=1).T
    assert (cosines - torch.eye(6)).abs().max() < 0.2
    # seeded; the noise of the first networks of a larger request is the same noise
    assert torch.equal(noisy.sample_flat(6, seed=2), noisy.sample_flat(6, seed=2))
    assert torch.equal(residual_noise(3, dim, 2, 1.0), residual_noise(6, dim, 2, 1.0)[:3])
    assert not torch.equal(residual_noise(3, dim, 3, 1.0), residual_noise(3, dim, 2, 1.0))
    ensemble = noisy.generate(6, seed=2, evaluate=False)
    assert torch.equal(noisy.layout.flatten_stacked(ensemble.state), noisy.sample_flat(6, seed=2))


def test_evaluation_reports_the_flow_alone_beside_residual_noise(artifact, tmp_path):
    from models.evaluation import evaluate_generator

    noisy = with_residual_noise(artifact[0], tmp_path / "mlp-digits", 0.2)
    zoo = load_canonical_zoo(artifact[1]).zoo.stacked
    table = evaluate_generator(
        noisy, zoo, load_dataset("digits").val, count=12, steps_sweep=(2,), baseline_count=6
    ).table
    rows = table["rows"]
    assert rows["generated"]["count"] == rows["flow only"]["count"] == 12
    assert rows["pca-gaussian"]["count"] == 6 and table["baseline_count"] == 6
    assert rows["generated"]["novelty_ratio"] > rows["flow only"]["novelty_ratio"]

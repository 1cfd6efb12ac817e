"""The whole DeepWeightFlow pipeline on real data (sklearn digits), small enough for CI:
zoo -> canonicalize -> encoder + flow -> artifact -> generate -> accurate networks."""

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from contract.files import atomic_write
from models.flow import FlowTrainConfig, generate_codes
from models.generator import (
    ArtifactError,
    GeneratedEnsemble,
    Generator,
    discover_generators,
    read_card,
    write_result,
)
from models.generator.artifact import update_card
from models.generator.build import build_from_zoo
from models.generator.recipe import (
    EncoderRecipe,
    FlowRecipe,
    GeneratorRecipe,
    SamplingRecipe,
    ScreeningRecipe,
)
from models.generator.sampling import residual_noise
from models.generator.screening import Screening
from models.weightspace import WeightLayout, batched_evaluate, predictions, probabilities
from models.zoo.build import train_zoo
from models.zoo.canonical import canonicalize_zoo, load_canonical_zoo
from models.zoo.datasets import load_dataset
from models.zoo.train import default_recipe

RECIPE = GeneratorRecipe(
    encoder=EncoderRecipe(n_components=16),
    flow=FlowRecipe(hidden=128, train=FlowTrainConfig(iterations=600, batch_size=32, device="cpu")),
    sampling=SamplingRecipe(steps=8),
)


def sample_flat(generator: Generator, count: int, seed: int, residual: bool = True) -> torch.Tensor:
    """Flat weights (count, D) of the first candidates of the seed's stream, with the card's sampler."""
    method, steps = generator.card.sampler.method, generator.card.sampler.steps
    return generator.sampler.sample(count, seed, method, steps, residual=residual)


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
    assert ensemble.state.keys() == generator.decoder.template.keys()
    assert all(v.shape[0] == 32 for v in ensemble.state.values())
    test = load_dataset("digits").test
    accuracy = batched_evaluate(generator.decoder.module, ensemble.state, test.images, test.labels)[1]
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
    stamped = GeneratedEnsemble(ensemble.state, ensemble.metadata.model_copy(update={"job_id": "abc"}))
    atomic_write(path, lambda temporary: write_result(temporary, stamped))
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
    assert card.name == "mlp-digits" and card.architecture.name == "mlp-digits"
    assert card.zoo.size == 24 and card.zoo.template == "medoid"
    assert card.encoder["code_dim"] == 16
    assert {k: getattr(card.sampler, k) for k in ("method", "steps", "residual_noise")} == {
        "method": "rk4",
        "steps": 8,
        "residual_noise": 0.0,
    }
    # the zoo spread is the median distance from each member to its nearest other member
    zoo = load_canonical_zoo(artifact[1]).zoo
    flat = WeightLayout.from_module(zoo.architecture.build()).flatten_stacked(zoo.stacked)
    spread = torch.cdist(flat.double(), flat.double()).fill_diagonal_(float("inf")).min(1).values.median()
    assert card.sampler.zoo_spread == pytest.approx(spread.item(), rel=1e-5)
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

    from models.generator.evaluation import evaluate_generator, record_evaluation

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
    # functional novelty: disagreement with the nearest member; 10-network ensembles (2 draws of 20)
    assert 0 <= rows["generated"]["disagreement_median"] <= 1 and rows["zoo"]["disagreement_median"] > 0
    assert rows["generated"]["ensemble_draws"] == 2 and rows["zoo"]["ensemble_draws"] == 2
    assert rows["zoo"]["ensemble_accuracy_mean"] >= rows["zoo"]["mean"] - 1, "ensembles are not worse"
    record_evaluation(directory, evaluation)
    card = read_card(directory)  # still verifies: the hashed files were not touched
    assert card.evaluation["rows"]["generated"]["mean"] == rows["generated"]["mean"]
    assert card.generated.test_accuracy.mean == rows["generated"]["mean"]
    assert (directory / "evaluation.png").read_bytes()[:4] == b"\x89PNG"


def test_generator_evaluate_cli_rewrites_the_card_and_figure_with_the_frontier(
    artifact, tmp_path, monkeypatch
):
    import shutil

    from typer.testing import CliRunner

    from deepweightflow.cli import app
    from models.generator import frontier as frontier_module

    # three strengths per family keep the test short; the sweep and its reading are the same code
    short = {name: (what, grid[1:6:2]) for name, (what, grid) in frontier_module.FAMILIES.items()}
    monkeypatch.setattr(frontier_module, "FAMILIES", short)
    monkeypatch.setattr(frontier_module, "FISHER_IMAGES", 300)

    generators = tmp_path / "generators"
    shutil.copytree(artifact[0], generators / "mlp-digits")
    flow_before = (generators / "mlp-digits" / "flow.safetensors").read_bytes()
    arguments = ["generator", "evaluate", "mlp-digits", "--zoo", str(artifact[1])]
    arguments += ["--generators", str(generators), "--count", "10", "--baseline-count", "10", "--steps", "2"]
    refused = CliRunner().invoke(app, [*arguments, "--examples", "0"])
    assert refused.exit_code != 0 and "--examples must be at least 1" in refused.output
    result = CliRunner().invoke(app, [*arguments, "--examples", "200"])
    assert result.exit_code == 0, result.output
    assert "baselines at the generated error IoU" in result.output
    card = read_card(generators / "mlp-digits")  # verifies: no hashed file was touched
    assert card.evaluation["split"] == "test (first 200 examples)"
    assert (generators / "mlp-digits" / "flow.safetensors").read_bytes() == flow_before
    frontier = card.evaluation["frontier"]
    assert set(frontier["families"]) == set(short) and frontier["skipped"] == {}
    assert frontier["target_error_iou"] == card.evaluation["rows"]["generated"]["error_iou_median"]
    noise = frontier["families"]["noise"]["points"]
    assert len(noise) >= 3 and noise[0]["error_iou_median"] > noise[-1]["error_iou_median"], (
        "stronger: more novel"
    )
    assert card.generated.error_iou == card.evaluation["rows"]["generated"]["error_iou_median"]
    assert card.generated.zoo_error_iou == card.evaluation["rows"]["zoo"]["error_iou_median"]
    assert (generators / "mlp-digits" / "evaluation.png").read_bytes()[:4] == b"\x89PNG"


def with_residual_noise(source: Path, destination: Path, ratio: float) -> Generator:
    """A copy of the artifact whose card asks for residual noise at novelty ratio `ratio`."""
    import shutil

    shutil.copytree(source, destination)
    update_card(
        destination,
        lambda card: card.model_copy(
            update={"sampler": card.sampler.model_copy(update={"residual_noise": ratio})}
        ),
    )
    return Generator.load(destination, device="cpu")


def test_residual_noise_is_isotropic_at_the_card_ratio_and_seeded(artifact, tmp_path):
    plain = Generator.load(artifact[0], device="cpu")
    noisy = with_residual_noise(artifact[0], tmp_path / "mlp-digits", 0.2)
    spread, dim = noisy.card.sampler.zoo_spread, noisy.decoder.layout.dim
    sigma = noisy.sampler.residual_sigma
    assert plain.sampler.residual_sigma == 0 and sigma == pytest.approx(0.2 * spread / dim**0.5)
    flow_only = sample_flat(noisy, 6, seed=2, residual=False)
    assert torch.equal(flow_only, sample_flat(plain, 6, seed=2)), "without residual noise: the flow's samples"
    offsets = sample_flat(noisy, 6, seed=2) - flow_only
    # each network moves by ~0.2 zoo spreads, in a direction of its own
    assert offsets.norm(dim=1) == pytest.approx(torch.full((6,), 0.2 * spread), rel=0.1)
    assert offsets.mean().abs() < 0.1 * sigma
    cosines = torch.nn.functional.normalize(offsets, dim=1) @ torch.nn.functional.normalize(offsets, dim=1).T
    assert (cosines - torch.eye(6)).abs().max() < 0.2
    # seeded; the noise of the first networks of a larger request is the same noise
    assert torch.equal(sample_flat(noisy, 6, seed=2), sample_flat(noisy, 6, seed=2))
    assert torch.equal(residual_noise(3, dim, 2, 1.0), residual_noise(6, dim, 2, 1.0)[:3])
    assert not torch.equal(residual_noise(3, dim, 3, 1.0), residual_noise(3, dim, 2, 1.0))
    ensemble = noisy.generate(6, seed=2, evaluate=False)
    assert torch.equal(noisy.decoder.layout.flatten_stacked(ensemble.state), sample_flat(noisy, 6, seed=2))


def test_evaluation_reports_the_flow_alone_beside_residual_noise(artifact, tmp_path):
    from models.generator.evaluation import evaluate_generator

    noisy = with_residual_noise(artifact[0], tmp_path / "mlp-digits", 0.2)
    zoo = load_canonical_zoo(artifact[1]).zoo.stacked
    table = evaluate_generator(
        noisy, zoo, load_dataset("digits").val, count=12, steps_sweep=(2,), baseline_count=6
    ).table
    rows = table["rows"]
    assert rows["generated"]["count"] == rows["flow only"]["count"] == 12
    assert rows["pca-gaussian"]["count"] == 6 and table["baseline_count"] == 6
    assert rows["generated"]["novelty_ratio"] > rows["flow only"]["novelty_ratio"]


def with_screening(
    source: Path, destination: Path, threshold: float, max_candidates: float, **extra: Any
) -> Generator:
    """A copy of the artifact whose card screens candidates on its 512 training images
    (`extra`: early_images and early_threshold of a first stage, the subset scored)."""
    import shutil

    from contract.card import ScreeningEntry

    shutil.copytree(source, destination)
    screening = ScreeningEntry(
        images=512, quantile=0.5, threshold=threshold, max_candidates=max_candidates, **extra
    )
    update_card(
        destination,
        lambda card: card.model_copy(
            update={"sampler": card.sampler.model_copy(update={"screening": screening})}
        ),
    )
    return Generator.load(destination, device="cpu")


def train_accuracy(
    generator: Generator, state: dict[str, torch.Tensor], subset: list[int] | None = None
) -> torch.Tensor:
    """(count,) accuracy on the first 512 training images (or the `subset` of them): what screening scores."""
    train = load_dataset("digits").train
    index = torch.arange(512) if subset is None else torch.tensor(subset)
    return batched_evaluate(generator.decoder.module, state, train.images[index], train.labels[index])[1]


def candidate_scores(generator: Generator, count: int, seed: int) -> tuple[dict, torch.Tensor]:
    """The first `count` candidates of the seed's stream, as screening computes them (the ODE and
    the decoding on whole 64-row blocks), finished, and their screening accuracy."""
    steps, dim = generator.card.sampler.steps, generator.sampler.encoder.code_dim
    codes = generate_codes(generator.sampler.flow, -(-count // 64) * 64, dim, seed, "rk4", steps)
    blocks = [generator.sampler.decode(codes[s : s + 64], seed, start=s) for s in range(0, len(codes), 64)]
    flat = torch.cat(blocks)[:count]
    state = generator.decoder.networks(flat)
    return state, train_accuracy(generator, state)


def test_screening_keeps_the_first_candidates_that_reach_the_threshold(artifact, tmp_path):
    _, scores = candidate_scores(Generator.load(artifact[0], device="cpu"), 40, seed=5)
    threshold = scores.median().item()  # about half the candidates pass
    screened = with_screening(artifact[0], tmp_path / "mlp-digits", threshold, max_candidates=4)
    calls = []
    ensemble = screened.generate(6, seed=5, progress=lambda done, total: calls.append((done, total)))
    drawn = ensemble.metadata.screening_candidates
    assert ensemble.metadata.screening_accepted == 6 and ensemble.metadata.screening_filled == 0
    assert drawn % 8 == 0 and calls[-1] == (6, 6)
    state, scores = candidate_scores(screened, drawn, seed=5)
    first_passing = (scores >= threshold).nonzero().flatten()[:6]
    assert all(torch.equal(ensemble.state[k], state[k][first_passing]) for k in state)
    assert (train_accuracy(screened, ensemble.state) >= threshold).all()
    # a smaller request is a prefix; without screening the same stream is returned unfiltered
    smaller = screened.generate(3, seed=5, evaluate=False).state
    assert all(torch.equal(smaller[k], ensemble.state[k][:3]) for k in smaller)
    unscreened = screened.generate(6, seed=5, evaluate=False, screen=False).state
    assert all(torch.allclose(unscreened[k], state[k][:6], atol=1e-6) for k in unscreened)


def test_two_stage_screening_rejects_early_failures_and_keeps_the_same_rule(artifact, tmp_path):
    state, scores = candidate_scores(Generator.load(artifact[0], device="cpu"), 48, seed=5)
    train = load_dataset("digits").train
    early = batched_evaluate(
        Generator.load(artifact[0], device="cpu").decoder.module, state, train.images[:64], train.labels[:64]
    )[1]
    threshold, early_threshold = scores.quantile(0.3).item(), early.quantile(0.3).item()
    screened = with_screening(
        artifact[0], tmp_path / "mlp-digits", threshold, 6, early_images=64, early_threshold=early_threshold
    )
    ensemble = screened.generate(8, seed=5, evaluate=False)
    drawn = ensemble.metadata.screening_candidates
    passing = ((early[:drawn] >= early_threshold) & (scores[:drawn] >= threshold)).nonzero().flatten()
    assert ensemble.metadata.screening_accepted == min(8, len(passing))
    assert all(torch.equal(ensemble.state[k], state[k][passing[:8]]) for k in state)
    assert (early[:drawn] < early_threshold).any()  # the first stage did reject candidates


def test_screening_on_a_subset_scores_those_images_only(artifact, tmp_path):
    state, _ = candidate_scores(Generator.load(artifact[0], device="cpu"), 48, seed=3)
    subset = list(range(0, 512, 7))  # 74 of the 512 images
    on_subset = train_accuracy(Generator.load(artifact[0], device="cpu"), state, subset)
    threshold = on_subset.median().item()
    screened = with_screening(artifact[0], tmp_path / "mlp-digits", threshold, 6, subset=subset)
    ensemble = screened.generate(8, seed=3, evaluate=False)
    drawn = ensemble.metadata.screening_candidates
    passing = (on_subset[:drawn] >= threshold).nonzero().flatten()[:8]
    assert ensemble.metadata.screening_accepted == len(passing) == 8
    assert all(torch.equal(ensemble.state[k], state[k][passing]) for k in state)
    with pytest.raises(ValueError, match="subset indices"):
        Screening(images=512, quantile=0.5, threshold=0.5, max_candidates=2, subset=(0, 512))


def test_screening_fills_with_the_best_rejected_when_too_few_pass(artifact, tmp_path):
    screened = with_screening(artifact[0], tmp_path / "mlp-digits", threshold=1.01, max_candidates=2.5)
    ensemble = screened.generate(4, seed=9, evaluate=False)
    assert ensemble.metadata.screening_candidates == 16  # 2.5 x 4 = 10, in whole blocks of 8
    assert ensemble.metadata.screening_filled == 4 and ensemble.metadata.screening_accepted == 0
    _, scores = candidate_scores(screened, 16, seed=9)
    best = scores.sort(descending=True).values[:4]
    assert train_accuracy(screened, ensemble.state).tolist() == best.tolist()


def test_the_build_sets_the_threshold_at_the_zoo_quantile(artifact):
    from models.generator.build import screening_entry

    zoo = load_canonical_zoo(artifact[1]).zoo
    dataset = load_dataset("digits")
    recipe = replace(RECIPE, screening=ScreeningRecipe(images=300, quantile=0.25, max_candidates=3))
    entry = screening_entry(zoo.stacked, zoo.architecture, dataset, recipe)
    module = zoo.architecture.build()
    accuracy = batched_evaluate(module, zoo.stacked, dataset.train.images[:300], dataset.train.labels[:300])[
        1
    ]
    assert entry.model_dump() == {
        "images": 300,
        "quantile": 0.25,
        "threshold": pytest.approx(torch.quantile(accuracy.double(), 0.25).item()),
        "max_candidates": 3,
        "early_images": 0,
        "early_threshold": 0.0,
        "subset": None,
    }
    two_stage = replace(recipe, screening=replace(recipe.screening, early_images=50))
    entry = screening_entry(zoo.stacked, zoo.architecture, dataset, two_stage)
    early = batched_evaluate(module, zoo.stacked, dataset.train.images[:50], dataset.train.labels[:50])[1]
    assert (entry.early_images, entry.early_threshold) == (50, early.min().item())
    assert entry.threshold == pytest.approx(torch.quantile(accuracy.double(), 0.25).item())
    assert screening_entry(zoo.stacked, zoo.architecture, dataset, RECIPE) is None  # 0 images: off


def test_screening_can_score_only_the_images_some_member_is_unsure_of(artifact):
    from models.generator.build import screening_entry

    zoo = load_canonical_zoo(artifact[1]).zoo
    dataset = load_dataset("digits")
    recipe = replace(RECIPE, screening=ScreeningRecipe(images=300, quantile=0.25, unsure_below=0.9))
    entry = screening_entry(zoo.stacked, zoo.architecture, dataset, recipe)
    module = zoo.architecture.build()
    train = dataset.train
    wrong = predictions(module, zoo.stacked, train.images[:300]) != train.labels[:300]  # (K, 300)
    sure = probabilities(module, zoo.stacked, train.images[:300]).max(-1).values >= 0.9  # (K, 300)
    unsure = (wrong | ~sure).any(0).nonzero().flatten()  # below 0.9 on the true class, for some member
    assert entry.subset == unsure.tolist() and wrong.any(0).sum() < len(unsure) < 300
    accuracy = 1 - wrong[:, unsure].float().mean(1)
    assert entry.threshold == pytest.approx(torch.quantile(accuracy.double(), 0.25).item())
    too_few = replace(recipe, screening=replace(recipe.screening, early_images=len(unsure)))
    with pytest.raises(ValueError, match="too few to screen on"):
        screening_entry(zoo.stacked, zoo.architecture, dataset, too_few)


def test_evaluation_of_a_screening_generator_shows_what_screening_changes(artifact, tmp_path):
    from models.generator.evaluation import evaluate_generator

    threshold = (
        candidate_scores(Generator.load(artifact[0], device="cpu"), 40, seed=0)[1].quantile(0.4).item()
    )
    screened = with_screening(artifact[0], tmp_path / "mlp-digits", threshold, max_candidates=4)
    zoo = load_canonical_zoo(artifact[1]).zoo.stacked
    table = evaluate_generator(
        screened, zoo, load_dataset("digits").val, count=12, steps_sweep=(2,), baseline_count=8
    ).table
    rows = table["rows"]
    noise = next(name for name in rows if name.startswith("noise@") and not name.endswith("screened"))
    assert rows["generated"]["candidates"] > 12 and rows["unscreened"]["count"] == 12
    assert rows[f"{noise} screened"]["count"] == 8 and rows[f"{noise} screened"]["candidates"] >= 8
    assert rows["generated"]["mean"] >= rows["unscreened"]["mean"]


def test_a_rebuild_can_keep_the_flow_and_change_only_sampling(artifact, tmp_path):
    import shutil

    copy = tmp_path / "mlp-digits"
    shutil.copytree(artifact[0], copy)
    build_from_zoo(
        artifact[1],
        copy,
        replace(
            RECIPE,
            sampling=replace(RECIPE.sampling, residual_noise=0.1),
            screening=ScreeningRecipe(images=200),
        ),
        reuse_flow=True,
    )
    for name in ("flow.safetensors", "encoder.safetensors"):
        kept, original = load_file(str(copy / name)), load_file(str(artifact[0] / name))
        assert kept.keys() == original.keys() and all(torch.equal(kept[k], original[k]) for k in kept)
    assert (copy / "loss.png").read_bytes() == (artifact[0] / "loss.png").read_bytes()
    card = read_card(copy)
    assert card.sampler.residual_noise == 0.1 and card.sampler.screening.images == 200
    assert card.flow == read_card(artifact[0]).flow
    with pytest.raises(ValueError, match="build without --reuse-flow"):
        build_from_zoo(
            artifact[1], copy, replace(RECIPE, flow=replace(RECIPE.flow, hidden=64)), reuse_flow=True
        )
    assert read_card(copy).recipe["flow"]["hidden"] == RECIPE.flow.hidden, (
        "a refused rebuild leaves the artifact as it was"
    )

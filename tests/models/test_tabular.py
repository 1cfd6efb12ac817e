"""The tabular modality end to end on real data (scikit-learn's breast cancer table): per-feature
preprocessing carried by the card and the result file, and a tiny zoo -> generator -> networks."""

from dataclasses import replace
from pathlib import Path

import torch

from deepweightflow.preprocessing import Preprocess
from models.flow import FlowTrainConfig
from models.generator import Generator, read_card
from models.generator.build import build_from_zoo
from models.generator.data_batches import pack_batches, unpack_batches
from models.generator.recipe import FlowRecipe, recipe_for
from models.weightspace import batched_evaluate
from models.zoo.build import train_zoo
from models.zoo.canonical import canonicalize_zoo
from models.zoo.datasets import load_dataset
from models.zoo.train import default_recipe


def raw_rows(rows: torch.Tensor, stats: tuple[tuple[float, ...], tuple[float, ...]]) -> torch.Tensor:
    """Undo the per-feature standardization: (N, F) standardized -> raw feature values."""
    mean, std = (torch.tensor(s) for s in stats)
    return rows * std + mean


def test_breast_cancer_splits_are_standardized_per_feature_and_the_contract_says_how() -> None:
    data = load_dataset("breast-cancer")
    assert data.train.images.shape == (398, 30) and len(data.val) == 57 and len(data.test) == 114
    assert data.classes == ("malignant", "benign") and data.num_classes == 2
    assert data.train.images.mean(0).abs().max() < 1e-5 and (data.train.images.std(0) - 1).abs().max() < 0.01
    contract = data.input_contract((30,), "all of it")
    assert isinstance(contract.preprocessing.mean, list) and len(contract.preprocessing.mean) == 30
    raw = raw_rows(data.test.images, data.feature_stats)
    assert torch.allclose(Preprocess(contract)(raw), data.test.images, atol=1e-5)


def test_tabular_batches_are_stored_as_float_features() -> None:
    data = load_dataset("breast-cancer")
    tensors = pack_batches(data, calibration_size=64, screening_size=128, validation_size=57)
    assert tensors["train_images"].dtype == torch.float32 and tensors["train_images"].shape == (128, 30)
    batches = unpack_batches(tensors, calibration_size=64, screening_size=128)
    assert torch.equal(batches.screening.images, data.train.images[:128])
    assert torch.equal(batches.validation.images, data.val.images)


def test_a_tiny_tabular_zoo_becomes_a_generator_of_accurate_networks(tmp_path: Path) -> None:
    zoo = tmp_path / "zoo"
    train_zoo(
        "mlp-breast-cancer", 8, replace(default_recipe("mlp-breast-cancer"), epochs=15), zoo, chunk_size=8
    )
    canonicalize_zoo(zoo, ("medoid",))
    recipe = recipe_for("mlp-breast-cancer")
    recipe = replace(recipe, flow=FlowRecipe(hidden=64, train=FlowTrainConfig(iterations=300, batch_size=8)))
    directory = build_from_zoo(zoo, tmp_path / "generators" / "mlp-breast-cancer", recipe)
    card = read_card(directory)
    assert len(card.input.preprocessing.mean) == 30 and card.input.classes == ["malignant", "benign"]
    ensemble = Generator.load(directory, device="cpu").generate(8, seed=1)
    assert ensemble.metadata.input_contract == card.input
    test = load_dataset("breast-cancer").test
    module = Generator.load(directory, device="cpu").decoder.module
    accuracy = batched_evaluate(module, ensemble.state, test.images, test.labels)[1]
    assert accuracy.mean() > 0.85, f"chance is ~0.63 (the majority class); got {accuracy.mean():.3f}"

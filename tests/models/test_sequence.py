"""The 1-D sequence modality end to end on real data (MNIST-1D, built locally by the `mnist1d`
package): the splits, the input contract a result carries, and a tiny zoo -> generator -> networks
for both of its families (an MLP on the flattened signal, a 1-D CNN)."""

import random
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from deepweightflow.preprocessing import Preprocess
from models.flow import FlowTrainConfig
from models.generator import Generator, read_card
from models.generator.build import build_from_zoo
from models.generator.recipe import FlowRecipe, recipe_for
from models.weightspace import batched_evaluate
from models.zoo.build import train_zoo
from models.zoo.canonical import canonicalize_zoo
from models.zoo.datasets import load_mnist1d_dataset, raw_inputs
from models.zoo.train import default_recipe


def test_mnist1d_is_built_locally_into_fixed_splits_and_leaves_the_global_generators_alone() -> None:
    load_mnist1d_dataset.cache_clear()
    np.random.seed(7)  # noqa: NPY002 (the global generator is what must stay untouched)
    random.seed(7)
    data = load_mnist1d_dataset()
    assert np.random.randint(1 << 30) == np.random.RandomState(7).randint(1 << 30)  # noqa: NPY002
    assert random.random() == random.Random(7).random()
    assert data.train.images.shape == (3600, 1, 40) and len(data.val) == 400 and len(data.test) == 1000
    assert sorted(data.train.labels.unique().tolist()) == list(range(10)) and data.num_classes == 10
    assert abs(data.train.images.mean()) < 1e-4 and abs(data.train.images.std() - 1) < 1e-3
    load_mnist1d_dataset.cache_clear()
    assert load_mnist1d_dataset().fingerprint == data.fingerprint  # the same signals every time


def test_the_contract_turns_raw_signals_into_what_the_networks_saw() -> None:
    data = load_mnist1d_dataset()
    contract = data.input_contract((1, 40), data.train_description)
    assert contract.shape == [1, 40] and contract.dtype == "float32"
    assert len(contract.preprocessing.mean) == 40
    raw = raw_inputs(data, data.test.images)
    assert torch.allclose(Preprocess(contract)(raw), data.test.images, atol=1e-5)


# (architecture, epochs, accuracy the generated networks must exceed); chance is 0.10. The CNN's
# members reach ~0.9 after 3 epochs, the MLP's ~0.5 after 10.
TINY_ZOOS = [("mlp-mnist1d", 10, 0.35), ("cnn-mnist1d", 3, 0.6)]


@pytest.mark.parametrize(("architecture", "epochs", "floor"), TINY_ZOOS, ids=[t[0] for t in TINY_ZOOS])
def test_a_tiny_mnist1d_zoo_becomes_a_generator_of_networks_far_above_chance(
    tmp_path: Path, architecture: str, epochs: int, floor: float
) -> None:
    zoo = tmp_path / "zoo"
    train_zoo(architecture, 8, replace(default_recipe(architecture), epochs=epochs), zoo, chunk_size=8)
    canonicalize_zoo(zoo, ("medoid",))
    recipe = recipe_for(architecture)
    recipe = replace(recipe, flow=FlowRecipe(hidden=64, train=FlowTrainConfig(iterations=300, batch_size=8)))
    directory = build_from_zoo(zoo, tmp_path / "generators" / architecture, recipe)
    card = read_card(directory)
    assert card.input.shape == [1, 40] and card.input.classes == [str(d) for d in range(10)]
    generator = Generator.load(directory, device="cpu")
    ensemble = generator.generate(8, seed=1)
    assert ensemble.metadata.input_contract == card.input
    test = load_mnist1d_dataset().test
    accuracy = batched_evaluate(generator.decoder.module, ensemble.state, test.images, test.labels)[1]
    assert accuracy.mean() > floor, f"chance is 0.10; got {accuracy.mean():.3f}"

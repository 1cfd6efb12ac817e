"""Batched zoo training: a member trained inside a batch equals its seed trained alone."""

from dataclasses import replace

import pytest
import torch

from models.architectures import Architecture, get_architecture
from models.architectures.cnn import CNNConfig
from models.weightspace import eval_mode
from models.zoo.datasets import load_dataset
from models.zoo.train import Recipe, evaluate_members, learning_rate, train_members

MLP = get_architecture("mlp-digits")
# A two-block CNN on 8x8 digits: BatchNorm coverage at test speed.
CNN = Architecture("cnn-digits-test", "cnn", CNNConfig(in_channels=1, channels=(4, 8)), "digits", (1, 8, 8))
RECIPE = Recipe(epochs=1, batch_size=32, lr=1e-2)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def assert_member_equal(batched: dict, k: int, alone: dict) -> None:
    """Member k of a batched run against a K=1 run: equal up to float reassociation in the batched
    kernels (bitwise on this CPU for the MLP; ~1e-8 per step for the grouped convolutions)."""
    for key, tensor in alone.items():
        torch.testing.assert_close(batched[key][k], tensor[0], rtol=1e-5, atol=1e-6, msg=key)


def test_member_in_batch_equals_seed_trained_alone(digits):
    batched = train_members(MLP, digits, [3, 5, 7], RECIPE)  # one epoch, 39 steps
    alone = train_members(MLP, digits, [5], RECIPE)
    assert_member_equal(batched, 1, alone)
    # and the batch really holds different networks
    assert not torch.allclose(batched["layers.0.weight"][0], batched["layers.0.weight"][1])


def test_batchnorm_member_in_batch_equals_alone_including_running_stats(digits):
    """Few steps: Adam amplifies last-bit differences between kernels over long runs (see train.py),
    while BatchNorm statistics shared across members would be off by far more after one step."""
    batched = train_members(CNN, digits, [0, 1], RECIPE, max_steps=3)
    alone = train_members(CNN, digits, [1], RECIPE, max_steps=3)
    assert_member_equal(batched, 1, alone)
    assert batched["blocks.0.bn.num_batches_tracked"].tolist() == [3, 3]
    assert not torch.allclose(batched["blocks.0.bn.running_mean"][1], torch.zeros(4))


@pytest.mark.parametrize("architecture", [MLP, CNN], ids=["mlp", "cnn"])
def test_member_is_bitwise_independent_of_its_chunk_mates(digits, architecture):
    recipe = replace(RECIPE, train_subset=512)
    first = train_members(architecture, digits, [0, 1, 9], recipe)
    second = train_members(architecture, digits, [7, 8, 9], recipe)
    for key, tensor in first.items():
        assert torch.equal(tensor[2], second[key][2]), key


def test_training_is_deterministic_per_seed(digits):
    first = train_members(MLP, digits, [11, 12], RECIPE)
    second = train_members(MLP, digits, [11, 12], RECIPE)
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_batched_metrics_match_each_network_evaluated_alone(digits):
    stacked = train_members(MLP, digits, [0, 1], RECIPE)
    metrics = evaluate_members(MLP, stacked, digits, RECIPE, [0, 1])
    assert [m.seed for m in metrics] == [0, 1]
    for k, m in enumerate(metrics):
        net = MLP.build()
        net.load_state_dict({key: v[k] for key, v in stacked.items()})
        with eval_mode(net):
            acc = (net(digits.test.images).argmax(1) == digits.test.labels).float().mean().item()
        assert m.test_acc == pytest.approx(acc)
        assert m.test_acc > 0.6  # it learned in one epoch: chance is 0.1


def test_cosine_schedule_decays_from_peak_to_zero():
    recipe = Recipe(epochs=1, lr=0.01)
    assert learning_rate(recipe, 0, 100) == pytest.approx(0.01)
    assert learning_rate(recipe, 50, 100) == pytest.approx(0.005)
    assert learning_rate(recipe, 99, 100) < 1e-5
    assert learning_rate(replace(recipe, schedule="constant"), 99, 100) == 0.01


def test_recipe_rejects_unknown_optimizer_and_round_trips():
    with pytest.raises(ValueError, match="unknown optimizer 'adam'"):
        Recipe(epochs=1, optimizer="adam")
    recipe = Recipe(epochs=3, train_subset=100)
    assert Recipe.from_dict(recipe.to_dict()) == recipe

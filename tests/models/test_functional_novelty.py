"""Functional novelty (disagreement, ensembles), REPAIR, Fisher-shaped noise, pairwise-aligned
interpolation and the frontier reading, on hand-checkable inputs and sklearn digits."""

import math

import pytest
import torch

from models.architectures import get_architecture
from models.canon import spec_for
from models.generator.frontier import interpolate_at
from models.weightspace import WeightLayout, batched_forward, eval_mode, probabilities, stack_state_dicts
from models.zoo.baselines import (
    fisher_noise_scale,
    fisher_noisy_members,
    pairwise_aligned_pairs,
    parent_indices,
)
from models.zoo.datasets import load_dataset
from models.zoo.fisher import diagonal_fisher, per_example_fisher
from models.zoo.novelty import disagreement_with_nearest, ensemble_metrics, nearest_by_error_iou
from models.zoo.repair import layer_statistics, preactivation_statistics, repair, supports_repair


@pytest.fixture(scope="module")
def digits_members() -> tuple[torch.nn.Module, dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
    """Three mlp-digits networks trained briefly (full-batch Adam) on sklearn digits, stacked, and
    the training images and labels."""
    architecture = get_architecture("mlp-digits")
    train = load_dataset("digits").train
    states = []
    for seed in range(3):
        torch.manual_seed(seed)
        net = architecture.build()
        optimizer = torch.optim.Adam(net.parameters(), lr=0.01)
        for _ in range(60):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(net(train.images), train.labels).backward()
            optimizer.step()
        states.append({k: v.detach().clone() for k, v in net.state_dict().items()})
    return architecture.build(), stack_state_dicts(states), train.images, train.labels


def test_disagreement_is_with_the_member_whose_errors_overlap_most():
    labels = torch.tensor([0, 1, 2, 3])
    zoo_predicted = torch.tensor([[0, 1, 2, 0], [1, 1, 2, 3], [0, 2, 2, 3]])
    predicted = torch.tensor([[0, 1, 1, 0]])  # errs on examples 2 and 3: IoU 1/2, 0, 0 with the members
    iou, nearest = nearest_by_error_iou(predicted != labels, zoo_predicted != labels)
    assert iou.tolist() == [0.5] and nearest.tolist() == [0]
    # member 0 predicts (0, 1, 2, 0): one of four differs
    assert disagreement_with_nearest(
        predicted, predicted != labels, zoo_predicted, zoo_predicted != labels
    ).tolist() == [0.25]
    # leave one out in the zoo: member 1 errs on 0, member 2 on 1, member 0 on 3 -> IoU 0 everywhere,
    # ties go to the lowest other index: 0 -> 1, 1 -> 0, 2 -> 0
    zoo_errors = zoo_predicted != labels
    _, loo_nearest = nearest_by_error_iou(zoo_errors, zoo_errors, exclude_self=True)
    assert loo_nearest.tolist() == [1, 0, 0]
    loo = disagreement_with_nearest(zoo_predicted, zoo_errors, zoo_predicted, zoo_errors, exclude_self=True)
    assert loo.tolist() == [0.5, 0.5, 0.5]


def test_ensemble_metrics_average_the_softmax_of_disjoint_draws():
    labels = torch.tensor([0, 1])
    # two networks, two examples, two classes: each alone gets one example right
    probs = torch.tensor([[[0.9, 0.1], [0.6, 0.4]], [[0.3, 0.7], [0.2, 0.8]]])
    both = ensemble_metrics(probs, labels, size=2, draws=10)
    # averaged: example 0 -> (0.6, 0.4) right, example 1 -> (0.4, 0.6) right
    assert (both.size, both.draws) == (2, 1), "only one disjoint draw of two fits in two networks"
    assert both.accuracy_mean == pytest.approx(100.0) and both.accuracy_std == 0.0
    assert both.nll_mean == pytest.approx(-(math.log(0.6) + math.log(0.6)) / 2)
    singles = ensemble_metrics(probs, labels, size=1, draws=10)
    assert singles.draws == 2 and singles.accuracy_mean == pytest.approx(50.0)
    assert singles.nll_mean == pytest.approx(
        -(math.log(0.9) + math.log(0.4) + math.log(0.3) + math.log(0.8)) / 4
    )
    assert ensemble_metrics(probs, labels, size=10).size == 2, "fewer networks than the size: all of them"
    assert ensemble_metrics(probs.repeat(50, 1, 1), labels, size=10, draws=10).draws == 10


def test_probabilities_are_the_softmax_of_the_batched_forward_in_chunks(digits_members):
    module, stacked, images, _ = digits_members
    probs = probabilities(module, stacked, images[:50], batch_size=16, network_chunk=2)
    with eval_mode(module):
        expected = batched_forward(module, stacked, images[:50]).softmax(-1)
    assert probs.shape == (3, 50, 10) and torch.allclose(probs, expected, atol=1e-6)


def test_repair_restores_each_neurons_statistics_and_leaves_a_member_unchanged(digits_members):
    module, stacked, images, labels = digits_members
    assert supports_repair(module) and not supports_repair(get_architecture("cnn-fashion").build())
    parents = preactivation_statistics(module, stacked, images)
    noisy = {
        k: v + 0.15 * torch.randn(v.shape, generator=torch.Generator().manual_seed(1))
        for k, v in stacked.items()
    }
    before = layer_statistics(module, noisy, images, 1)
    assert not torch.allclose(before.std, parents[1].std, rtol=0.02)
    fixed = repair(module, noisy, images, parents)
    for layer, target in enumerate(parents):
        after = layer_statistics(module, fixed, images, layer)
        assert torch.allclose(after.mean, target.mean, atol=1e-4)
        assert torch.allclose(after.std, target.std, rtol=1e-4, atol=1e-5)
    assert torch.equal(fixed["layers.2.weight"], noisy["layers.2.weight"]), "the output layer is left alone"
    # a member repaired to its own statistics computes what it computed
    same = repair(module, stacked, images, parents)
    with eval_mode(module):
        assert torch.allclose(
            batched_forward(module, same, images), batched_forward(module, stacked, images), atol=1e-4
        )
    with pytest.raises(ValueError, match="MLP"):
        preactivation_statistics(get_architecture("cnn-fashion").build(), {}, images)


def test_fisher_matches_per_example_gradients_and_its_noise_goes_where_fisher_is_low(digits_members):
    module, stacked, images, labels = digits_members
    fisher = diagonal_fisher(module, stacked, images[:40], labels[:40], batch_size=16)
    layout = WeightLayout.from_module(module)
    assert fisher.shape == (3, layout.dim)
    net = get_architecture("mlp-digits").build()
    net.load_state_dict({k: v[1] for k, v in stacked.items()})
    squares = torch.zeros(layout.dim, dtype=torch.float64)
    for x, y in zip(images[:40], labels[:40], strict=True):
        net.zero_grad()
        torch.nn.functional.cross_entropy(net(x[None]), y[None]).backward()
        squares += torch.cat([p.grad.flatten() for p in net.parameters()]).double() ** 2
    assert torch.allclose(fisher[1], (squares / 40).float(), rtol=1e-3, atol=1e-9)
    generic = per_example_fisher(module, stacked, images[:40], labels[:40], batch_size=16)
    assert torch.allclose(generic, fisher, rtol=1e-3, atol=1e-9), "the MLP shortcut is the general Fisher"
    scale = fisher_noise_scale(fisher)
    assert scale.square().mean(1).allclose(torch.ones(3))
    flat = layout.flatten_stacked(stacked)
    parents = parent_indices(3, 400, seed=0)
    noise = fisher_noisy_members(flat, scale, 400, 0.5, 1.0, seed=0) - flat[parents]
    assert noise.norm(dim=1).median() == pytest.approx(0.5, rel=0.1), "distance ratio x loo, as isotropic"
    order = fisher[0].argsort()
    spread = noise[parents == 0].std(0)
    tenth = len(order) // 10
    assert spread[order[:tenth]].mean() > 3 * spread[order[-tenth:]].mean(), (
        "low-Fisher coordinates move more"
    )


def test_pairwise_alignment_keeps_the_function_and_brings_the_pair_closer(digits_members):
    module, stacked, images, _ = digits_members
    layout = WeightLayout.from_module(module)
    architecture = get_architecture("mlp-digits")
    pairs = pairwise_aligned_pairs(spec_for(architecture), layout, stacked, count=6, seed=0)
    flat = layout.flatten_stacked(stacked)
    assert torch.equal(pairs.a, flat[pairs.first]) and (pairs.first != pairs.second).all()
    assert ((pairs.b - pairs.a).norm(dim=1) <= (flat[pairs.second] - pairs.a).norm(dim=1) + 1e-5).all()
    with eval_mode(module):
        aligned = batched_forward(module, layout.unflatten_stacked(pairs.b), images[:100])
        original = batched_forward(module, {k: v[pairs.second] for k, v in stacked.items()}, images[:100])
    assert torch.allclose(aligned, original, atol=1e-4)
    assert torch.equal(pairs.interpolate(0.0), pairs.a) and torch.allclose(pairs.interpolate(1.0), pairs.b)


def test_frontier_reading_interpolates_along_the_curve():
    def point(strength, iou, mean):
        return {"strength": strength, "error_iou_median": iou, "mean": mean, "novelty_ratio": strength}

    curve = [point(0.3, 0.6, 85.0), point(0.1, 0.9, 89.0), point(0.2, 0.8, 88.0)]  # any order
    reading = interpolate_at(curve, 0.7, keys=("mean", "novelty_ratio"))
    assert reading["within_range"] and reading["mean"] == pytest.approx(86.5)
    assert reading["strength"] == pytest.approx(0.25) and reading["novelty_ratio"] == pytest.approx(0.25)
    assert interpolate_at(curve, 0.9, keys=("mean",))["mean"] == pytest.approx(89.0)
    outside = interpolate_at(curve, 0.95, keys=("mean",))
    assert not outside["within_range"] and outside["mean"] == 89.0 and outside["error_iou_median"] == 0.9
    # a noisy curve that crosses the target twice: the more accurate reading counts
    wiggly = [point(0.1, 0.9, 89.0), point(0.2, 0.7, 87.0), point(0.3, 0.8, 86.0), point(0.4, 0.5, 84.0)]
    reading = interpolate_at(wiggly, 0.75, keys=("mean",))
    assert reading["crossings"] == 3 and reading["mean"] == pytest.approx(87.5)

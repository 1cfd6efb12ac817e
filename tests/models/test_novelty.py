"""Novelty measures and the trivial baselines."""

import pytest
import torch

from models.zoo.baselines import gaussian_codes, interpolated_members, noisy_members
from models.zoo.novelty import max_error_iou, nearest_distances, novelty, zoo_novelty


def test_nearest_distances_and_leave_one_out():
    zoo = torch.tensor([[0.0, 0.0], [3.0, 4.0], [6.0, 8.0]])
    assert nearest_distances(torch.tensor([[0.0, 1.0]]), zoo).tolist() == [1.0]
    assert nearest_distances(zoo, zoo).tolist() == [0.0, 0.0, 0.0]
    assert nearest_distances(zoo, zoo, exclude_self=True).tolist() == [5.0, 5.0, 5.0]


def test_error_iou():
    errors = torch.tensor([[1, 1, 0, 0], [1, 0, 1, 0], [0, 0, 0, 1]], dtype=torch.bool)
    iou = max_error_iou(errors, errors, exclude_self=True)
    assert iou.tolist() == pytest.approx([1 / 3, 1 / 3, 0.0])
    assert max_error_iou(errors[:1], errors).tolist() == [1.0]


def test_copies_of_the_zoo_have_zero_novelty_and_far_points_high():
    g = torch.Generator().manual_seed(0)
    zoo = torch.randn(20, 50, generator=g)
    errors = torch.rand(20, 200, generator=g) < 0.1
    copies = novelty(zoo[:10], errors[:10], zoo, errors)
    assert copies.novelty_ratio == 0.0 and copies.error_iou_median == 1.0
    assert zoo_novelty(zoo, errors).novelty_ratio == 1.0
    far = novelty(zoo[:10] + 100.0, errors[:10], zoo, errors)
    assert far.novelty_ratio > 10


def test_noise_baseline_hits_the_requested_ratio():
    g = torch.Generator().manual_seed(1)
    zoo = torch.randn(50, 2000, generator=g) * 3
    loo = nearest_distances(zoo, zoo, exclude_self=True).median().item()
    for ratio in (0.05, 0.25):
        samples = noisy_members(zoo, 40, ratio, loo, seed=2)
        measured = nearest_distances(samples, zoo).median().item() / loo
        assert measured == pytest.approx(ratio, rel=0.1)


def test_interpolation_baseline_lies_between_distinct_members():
    zoo = torch.eye(5)
    mids = interpolated_members(zoo, 30, 0.5, seed=0)
    assert torch.all((mids == 0.5).sum(1) == 2), "each sample mixes exactly two different members"


def test_gaussian_codes_match_the_fitted_moments():
    g = torch.Generator().manual_seed(3)
    codes = torch.randn(400, 3, generator=g) @ torch.tensor([[2.0, 0, 0], [1, 1, 0], [0, 0, 0.1]]) + 5
    samples = gaussian_codes(codes, 20000, seed=4)
    assert torch.allclose(samples.mean(0), codes.mean(0), atol=0.1)
    assert torch.allclose(torch.cov(samples.T), torch.cov(codes.T), atol=0.15)

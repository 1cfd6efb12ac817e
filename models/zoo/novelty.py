"""Novelty of networks against a zoo: weight-space distance and error overlap.

A generator that memorizes its zoo produces networks that sit next to zoo
members in canonical weight space and make the same mistakes. Two measures:

- nearest-zoo L2 distance in canonical weight space (flat parameters), and the
  *novelty ratio* r = median nearest-zoo distance of the networks / the zoo's
  own leave-one-out median nearest distance;
- the largest IoU between a network's set of misclassified test examples and
  that of any zoo member (leave-one-out for zoo members themselves).
"""

from dataclasses import asdict, dataclass

import torch


def nearest_distances(
    points: torch.Tensor, reference: torch.Tensor, exclude_self: bool = False
) -> torch.Tensor:
    """L2 distance from each row of points (M, D) to its nearest row of reference (K, D) -> (M,).

    With `exclude_self`, points is reference and each row's own entry is skipped.
    """
    distances = torch.cdist(points.double(), reference.double())
    if exclude_self:
        distances.fill_diagonal_(float("inf"))
    return distances.min(dim=1).values.float()


def max_error_iou(
    errors: torch.Tensor, reference_errors: torch.Tensor, exclude_self: bool = False
) -> torch.Tensor:
    """Largest IoU of each network's misclassified set with any reference network's.

    errors (M, N) bool, reference_errors (K, N) bool -> (M,) in [0, 1].
    """
    a, b = errors.float(), reference_errors.float()
    intersection = a @ b.T
    union = a.sum(1, keepdim=True) + b.sum(1) - intersection
    iou = intersection / union.clamp_min(1)
    if exclude_self:
        iou.fill_diagonal_(-1.0)
    return iou.max(dim=1).values


def pairwise_median_distance(points: torch.Tensor) -> float:
    """Median nearest-neighbour distance within one set (M, D), leave-one-out."""
    return nearest_distances(points, points, exclude_self=True).median().item()


@dataclass(frozen=True)
class Novelty:
    nearest_zoo_l2_median: float  # median distance to the nearest zoo member
    novelty_ratio: float  # the above / the zoo's leave-one-out median
    self_l2_median: float  # median nearest-neighbour distance within the set itself
    error_iou_median: float  # median of the largest misclassified-set IoU with a zoo member

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def zoo_novelty(zoo_flat: torch.Tensor, zoo_errors: torch.Tensor) -> Novelty:
    """The zoo measured against itself, leave one out (its novelty ratio is 1 by definition)."""
    loo = nearest_distances(zoo_flat, zoo_flat, exclude_self=True).median().item()
    iou = max_error_iou(zoo_errors, zoo_errors, exclude_self=True).median().item()
    return Novelty(loo, 1.0, loo, iou)


def novelty(
    flat: torch.Tensor, errors: torch.Tensor, zoo_flat: torch.Tensor, zoo_errors: torch.Tensor
) -> Novelty:
    """Networks flat (M, D) with errors (M, N) against a zoo zoo_flat (K, D), zoo_errors (K, N)."""
    zoo_loo = nearest_distances(zoo_flat, zoo_flat, exclude_self=True).median().item()
    nearest = nearest_distances(flat, zoo_flat).median().item()
    return Novelty(
        nearest_zoo_l2_median=nearest,
        novelty_ratio=nearest / zoo_loo,
        self_l2_median=pairwise_median_distance(flat) if len(flat) > 1 else float("nan"),
        error_iou_median=max_error_iou(errors, zoo_errors).median().item(),
    )

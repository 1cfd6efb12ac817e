"""Novelty of networks against a zoo: weight-space distance and error overlap.

A generator that memorizes its zoo produces networks that sit next to zoo
members in canonical weight space and make the same mistakes. Two measures:

- nearest-zoo L2 distance in canonical weight space (flat parameters), and the
  *novelty ratio* r = median nearest-zoo distance of the networks / the zoo's
  own leave-one-out median nearest distance;
- the largest IoU between a network's set of misclassified test examples and
  that of any zoo member (leave-one-out for zoo members themselves).

Distance can be gamed (noise along directions the function ignores adds distance and
changes nothing), so the headline novelty is functional: the error IoU above, and the
*prediction disagreement* with the nearest zoo member (the one with the largest error IoU):
the fraction of test examples on which the two predict different classes. For ensembles,
`ensemble_metrics` scores the averaged softmax of disjoint draws of networks.
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
    return nearest_by_error_iou(errors, reference_errors, exclude_self)[0]


def nearest_by_error_iou(
    errors: torch.Tensor, reference_errors: torch.Tensor, exclude_self: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference network each network's errors overlap most: errors (M, N) bool,
    reference_errors (K, N) bool -> (IoU (M,), index (M,) int64 into the reference).

    Ties go to the lowest index; with `exclude_self` (errors is reference_errors) a network
    never picks itself.
    """
    a, b = errors.float(), reference_errors.float()
    intersection = a @ b.T
    union = a.sum(1, keepdim=True) + b.sum(1) - intersection
    iou = intersection / union.clamp_min(1)
    if exclude_self:
        iou.fill_diagonal_(-1.0)
    best = iou.max(dim=1)
    return best.values, best.indices


def disagreement(
    predicted: torch.Tensor, reference_predicted: torch.Tensor, nearest: torch.Tensor
) -> torch.Tensor:
    """Fraction of examples on which each network predicts another class than its nearest reference
    network: predicted (M, N), reference_predicted (K, N) class indices, nearest (M,) indices into
    the reference -> (M,) in [0, 1]."""
    return (predicted != reference_predicted[nearest]).double().mean(1).float()


def disagreement_with_nearest(
    predicted: torch.Tensor,
    errors: torch.Tensor,
    reference_predicted: torch.Tensor,
    reference_errors: torch.Tensor,
    exclude_self: bool = False,
) -> torch.Tensor:
    """(M,) disagreement of each network with its nearest reference network by error IoU
    (`nearest_by_error_iou`); predicted/errors (M, N), reference_* (K, N)."""
    nearest = nearest_by_error_iou(errors, reference_errors, exclude_self)[1]
    return disagreement(predicted, reference_predicted, nearest)


@dataclass(frozen=True)
class EnsembleMetrics:
    """Accuracy (%) and NLL (nats per example) of the averaged softmax of `size` networks, mean and
    std over `draws` disjoint draws (fewer than asked when the set is small: see `draws`)."""

    size: int
    draws: int
    accuracy_mean: float
    accuracy_std: float  # 0.0 when draws == 1
    nll_mean: float
    nll_std: float

    def to_dict(self, prefix: str = "ensemble_") -> dict[str, float]:
        return {f"{prefix}{k}": v for k, v in asdict(self).items()}


def ensemble_metrics(
    probabilities: torch.Tensor, labels: torch.Tensor, size: int = 10, draws: int = 10, seed: int = 0
) -> EnsembleMetrics:
    """Ensembles of `size` networks drawn without replacement (disjoint) from probabilities
    (M, N, C) softmax outputs on examples with labels (N,): each draw averages its members'
    probabilities, scores accuracy and NLL; mean and std (unbiased) over the draws.

    With M < size * draws only M // size draws are made; with M < size, one draw of all M.
    """
    count = len(probabilities)
    if count < 1:
        raise ValueError("ensemble metrics need at least one network")
    size = min(size, count)
    draws = max(1, min(draws, count // size))
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed))
    accuracy, nll = [], []
    labels = labels.to(probabilities.device)
    for d in range(draws):
        mean = (
            probabilities[order[d * size : (d + 1) * size].to(probabilities.device)].double().mean(0)
        )  # (N, C)
        accuracy.append((mean.argmax(-1) == labels).double().mean().item() * 100)
        picked = mean.gather(1, labels[:, None]).squeeze(1)
        nll.append(-picked.clamp_min(1e-300).log().mean().item())
    acc, loss = torch.tensor(accuracy, dtype=torch.float64), torch.tensor(nll, dtype=torch.float64)
    spread = (lambda t: t.std().item()) if draws > 1 else (lambda t: 0.0)
    return EnsembleMetrics(size, draws, acc.mean().item(), spread(acc), loss.mean().item(), spread(loss))


def pairwise_median_distance(points: torch.Tensor) -> float:
    """Median nearest-neighbour distance within one set (M, D), leave-one-out."""
    return nearest_distances(points, points, exclude_self=True).median().item()


@dataclass(frozen=True)
class Novelty:
    nearest_zoo_l2_median: float  # median distance to the nearest zoo member
    novelty_ratio: float  # the above / the zoo's leave-one-out median
    self_l2_median: float  # median nearest-neighbour distance within the set itself
    error_iou_median: float  # median of the largest misclassified-set IoU with a zoo member
    # median fraction of examples predicted differently from the nearest zoo member (largest error
    # IoU); None when predictions were not given
    disagreement_median: float | None = None

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def zoo_novelty(
    zoo_flat: torch.Tensor, zoo_errors: torch.Tensor, zoo_predicted: torch.Tensor | None = None
) -> Novelty:
    """The zoo measured against itself, leave one out (its novelty ratio is 1 by definition).

    zoo_predicted (K, N) class indices, when given, adds the leave-one-out disagreement.
    """
    loo = nearest_distances(zoo_flat, zoo_flat, exclude_self=True).median().item()
    iou = max_error_iou(zoo_errors, zoo_errors, exclude_self=True).median().item()
    disagree = None
    if zoo_predicted is not None:
        disagree = (
            disagreement_with_nearest(zoo_predicted, zoo_errors, zoo_predicted, zoo_errors, exclude_self=True)
            .median()
            .item()
        )
    return Novelty(loo, 1.0, loo, iou, disagree)


def novelty(
    flat: torch.Tensor,
    errors: torch.Tensor,
    zoo_flat: torch.Tensor,
    zoo_errors: torch.Tensor,
    predicted: torch.Tensor | None = None,
    zoo_predicted: torch.Tensor | None = None,
) -> Novelty:
    """Networks flat (M, D) with errors (M, N) against a zoo zoo_flat (K, D), zoo_errors (K, N);
    with predicted (M, N) and zoo_predicted (K, N) class indices, the disagreement too."""
    zoo_loo = nearest_distances(zoo_flat, zoo_flat, exclude_self=True).median().item()
    nearest = nearest_distances(flat, zoo_flat).median().item()
    disagree = None
    if predicted is not None and zoo_predicted is not None:
        disagree = disagreement_with_nearest(predicted, errors, zoo_predicted, zoo_errors).median().item()
    return Novelty(
        nearest_zoo_l2_median=nearest,
        novelty_ratio=nearest / zoo_loo,
        self_l2_median=pairwise_median_distance(flat) if len(flat) > 1 else float("nan"),
        error_iou_median=max_error_iou(errors, zoo_errors).median().item(),
        disagreement_median=disagree,
    )

"""Measuring a set of networks against the zoo: accuracy, functional and weight-space novelty,
ensembles. Shared by the evaluation table (models.generator.evaluation) and the baseline
frontier (models.generator.frontier)."""

from dataclasses import dataclass
from typing import Any

import torch

from models.generator.pipeline import Generator
from models.weightspace import probabilities
from models.zoo.datasets import Split
from models.zoo.novelty import Novelty, ensemble_metrics, novelty, zoo_novelty

ENSEMBLE_SIZE = 10  # networks per ensemble
ENSEMBLE_DRAWS = 10  # disjoint draws per row (fewer when a row has fewer than 100 networks)


def accuracy_stats(accuracy: torch.Tensor, zoo_min: float | None = None) -> dict[str, float]:
    """mean/std/min/max in percent of accuracy (K,) in [0, 1], plus the share >= the zoo's minimum."""
    pct = accuracy.double() * 100
    stats = {
        "mean": pct.mean().item(),
        "std": pct.std().item() if len(pct) > 1 else 0.0,
        "min": pct.min().item(),
        "max": pct.max().item(),
    }
    if zoo_min is not None:
        stats["share_at_or_above_zoo_min"] = (pct >= zoo_min - 1e-9).double().mean().item()
    return stats


@dataclass(frozen=True)
class Outputs:
    """What K networks do on a split of N examples with C classes."""

    probabilities: torch.Tensor  # (K, N, C) softmax, on the CPU
    predicted: torch.Tensor  # (K, N) int64
    errors: torch.Tensor  # (K, N) bool
    accuracy: torch.Tensor  # (K,) in [0, 1]


def network_outputs(generator: Generator, state: dict[str, torch.Tensor], split: Split) -> Outputs:
    """Softmax outputs, predictions, errors and accuracy of stacked networks on a split."""
    decoder = generator.decoder
    probs = probabilities(
        decoder.module,
        {k: v.to(decoder.device) for k, v in state.items()},
        split.images.to(decoder.device),
    ).cpu()
    predicted = probs.argmax(-1)
    errors = predicted != split.labels
    return Outputs(probs, predicted, errors, 1 - errors.double().mean(1))


@dataclass(frozen=True)
class Reference:
    """The zoo measured once on a split: what every row is compared with."""

    flat: torch.Tensor  # (K, D) canonical flat weights
    outputs: Outputs
    stats: dict[str, float]  # accuracy_stats of the members
    novelty: Novelty  # leave-one-out, with disagreement

    @property
    def loo_l2(self) -> float:
        return self.novelty.nearest_zoo_l2_median


def zoo_reference(generator: Generator, canonical_zoo: dict[str, torch.Tensor], split: Split) -> Reference:
    flat = generator.decoder.layout.flatten_stacked(canonical_zoo).float()
    outputs = network_outputs(generator, canonical_zoo, split)
    return Reference(
        flat, outputs, accuracy_stats(outputs.accuracy), zoo_novelty(flat, outputs.errors, outputs.predicted)
    )


def ensemble_row(outputs: Outputs, labels: torch.Tensor, seed: int) -> dict[str, float]:
    """The `ensemble_*` columns of a row: 10-network ensembles, up to 10 disjoint draws."""
    return ensemble_metrics(outputs.probabilities, labels, ENSEMBLE_SIZE, ENSEMBLE_DRAWS, seed).to_dict()


def measure_row(
    generator: Generator,
    state: dict[str, torch.Tensor],
    split: Split,
    reference: Reference,
    seed: int = 0,
    **extra: Any,
) -> tuple[dict[str, Any], torch.Tensor]:
    """One table row for finished stacked networks: accuracy stats (percent), functional novelty
    (error IoU, disagreement), ensembles, weight-space novelty; and their accuracy (K,) in [0, 1]."""
    outputs = network_outputs(generator, state, split)
    flat = generator.decoder.layout.flatten_stacked(state).float().cpu()
    zoo = reference.outputs
    found = novelty(flat, outputs.errors, reference.flat, zoo.errors, outputs.predicted, zoo.predicted)
    row = {
        "count": len(flat),
        **accuracy_stats(outputs.accuracy, reference.stats["min"]),
        **found.to_dict(),
        **ensemble_row(outputs, split.labels, seed),
        **extra,
    }
    return row, outputs.accuracy

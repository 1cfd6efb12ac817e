"""Evaluate a generator against its zoo: accuracy, novelty and trivial baselines on one table.

Every row is a set of networks measured on the test split:
- `zoo`: the canonical zoo members (their own BatchNorm statistics);
- `generated`: networks sampled from the generator (BatchNorm recalibrated, screened when the
  artifact screens: its row says how many candidates were drawn);
- `unscreened`: the first `count` candidates of the same stream, none rejected (screening only);
- `flow only`: unscreened samples without the residual noise (when the artifact adds any);
- `noise@r`: a zoo member plus isotropic noise at the generated networks' novelty ratio, and
  `noise@r screened`: the same candidates through the generator's screening (screening only);
- `interp@w`: interpolation between two aligned members, at the weight giving about that ratio;
- `pca-gaussian`: a Gaussian fitted to the zoo's codes, decoded.
Baselines get the same BatchNorm recalibration as generated networks. The steps sweep
measures unscreened samples: it shows the sampler, not the screening.

Novelty is functional first: every row has the median error IoU with the nearest zoo member
(`error_iou_median`; the zoo row's is leave-one-out), the median prediction disagreement with
that member (`disagreement_median`), and the test accuracy and NLL of 10-network ensembles
(averaged softmax; mean and std over up to 10 disjoint draws, fewer when the row has fewer
than 100 networks: `ensemble_draws` says how many). The weight-space ratio r stays beside them.
With training data given, `frontier` (models.generator.frontier) sweeps every baseline family's
strength and reads off its accuracy at the generated networks' error IoU.
"""

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from contract.card import AccuracyStats, GeneratedEntry, GeneratorCard
from models.generator.artifact import update_card
from models.generator.frontier import FrontierContext, sweep_frontier
from models.generator.measure import (
    ENSEMBLE_DRAWS,
    ENSEMBLE_SIZE,
    Outputs,
    Reference,
    accuracy_stats,
    ensemble_row,
    measure_row,
    network_outputs,
    zoo_reference,
)
from models.generator.pipeline import Generator
from models.weightspace import predictions
from models.zoo.baselines import gaussian_codes, interpolated_members, noisy_members
from models.zoo.datasets import Split

__all__ = [
    "Evaluation",
    "Outputs",
    "Reference",
    "accuracy_stats",
    "errors_and_accuracy",
    "evaluate_generator",
    "measure_row",
    "network_outputs",
    "record_evaluation",
    "zoo_reference",
]


def errors_and_accuracy(
    generator: Generator, state: dict[str, torch.Tensor], test: Split
) -> tuple[torch.Tensor, torch.Tensor]:
    """Misclassified mask (K, N) bool and accuracy (K,) on the test split."""
    decoder = generator.decoder
    predicted = predictions(
        decoder.module,
        {k: v.to(decoder.device) for k, v in state.items()},
        test.images.to(decoder.device),
    ).cpu()
    errors = predicted != test.labels
    return errors, 1 - errors.double().mean(1)


@dataclass
class Evaluation:
    table: dict[str, Any]  # JSON-able: rows (name -> stats), steps_sweep, count, seed, split
    accuracies: dict[str, torch.Tensor]  # row name -> (K,) accuracy in [0, 1], for plots


def evaluate_generator(
    generator: Generator,
    canonical_zoo: dict[str, torch.Tensor],
    split: Split,
    count: int = 100,
    seed: int = 0,
    steps_sweep: Sequence[int] = (1, 2, 4, 8, 16, 32),
    split_name: str = "test",
    baseline_count: int | None = None,
    train: Split | None = None,
    frontier_count: int | None = None,
) -> Evaluation:
    """Zoo, generated networks and baselines measured on `split` (choose settings on "val").

    Baselines and the steps sweep use `baseline_count` networks (default `count`): fewer keeps
    the table affordable where every forward pass is costly (convolutions on a CPU). With
    `train` (labelled training examples: REPAIR statistics and the Fisher; never test data) the
    table gets a `frontier`: every baseline family swept in strength, `frontier_count` networks
    per point (default `baseline_count`), read off at the generated networks' error IoU.
    """
    baselines = baseline_count or count
    decoder, sampler = generator.decoder, generator.sampler
    method, steps = generator.card.sampler.method, generator.card.sampler.steps
    reference = zoo_reference(generator, canonical_zoo, split)
    zoo_flat = reference.flat
    rows: dict[str, Any] = {
        "zoo": {
            "count": len(zoo_flat),
            **reference.stats,
            **reference.novelty.to_dict(),
            **ensemble_row(reference.outputs, split.labels, seed),
        }
    }
    accuracies = {"zoo": reference.outputs.accuracy}

    def measure(name: str, state: dict[str, torch.Tensor], **extra: Any) -> None:
        rows[name], accuracies[name] = measure_row(generator, state, split, reference, seed, **extra)

    generated = generator.generate(count, seed, evaluate=False)
    measure("generated", generated.state, **(generated.metadata.screening_counts() or {}))
    if generator.screening is not None:
        measure("unscreened", decoder.networks(sampler.sample(count, seed, method, steps)))
    if sampler.residual_sigma > 0:
        measure("flow only", decoder.networks(sampler.sample(count, seed, method, steps, residual=False)))
    ratio = rows["generated"]["novelty_ratio"]
    screening = generator.screening
    pool = screening.limit(baselines) if screening else baselines
    noisy = noisy_members(zoo_flat, pool, ratio, reference.loo_l2, seed)
    measure(f"noise@r={ratio:.2f}", decoder.networks(noisy[:baselines]))
    if screening is not None:
        state, noise_counts = screening.screen(lambda start, n: noisy[start : start + n], baselines, decoder)
        measure(f"noise@r={ratio:.2f} screened", state, **asdict(noise_counts))
    weight = min(0.5, ratio * reference.loo_l2 / torch.pdist(zoo_flat.double()).median().item())
    measure(
        f"interp@w={weight:.2f}", decoder.networks(interpolated_members(zoo_flat, baselines, weight, seed))
    )
    codes = sampler.encoder.encode(zoo_flat.to(decoder.device)).cpu()
    pca_flat = sampler.decode(gaussian_codes(codes, baselines, seed), seed, start=0, residual=False)
    measure("pca-gaussian", decoder.networks(pca_flat))

    sweep = []
    for steps in steps_sweep:
        state = generator.generate(baselines, seed, steps=steps, evaluate=False, screen=False).state
        accuracy = errors_and_accuracy(generator, state, split)[1]
        sweep.append({"steps": steps, "sampler": method, **accuracy_stats(accuracy)})
    table = {
        "rows": rows,
        "steps_sweep": sweep,
        "count": count,
        "baseline_count": baselines,
        "seed": seed,
        "split": split_name,
        "ensemble": {"size": ENSEMBLE_SIZE, "draws_asked": ENSEMBLE_DRAWS},
    }
    if train is not None:
        context = FrontierContext(generator, canonical_zoo, split, train, reference)
        table["frontier"] = sweep_frontier(
            context, rows["generated"]["error_iou_median"], frontier_count or baselines, seed
        )
    return Evaluation(table, accuracies)


def record_evaluation(directory: Path, evaluation: Evaluation) -> None:
    """Put the table in the artifact's card.json (as `evaluation`, with `generated` accuracy stats)
    and write `evaluation.png` beside it."""
    from models.generator.evaluation_plots import plot_evaluation

    generated = evaluation.table["rows"]["generated"]
    headline = GeneratedEntry(
        test_accuracy=AccuracyStats(**{k: generated[k] for k in ("mean", "std", "min", "max")}),
        novelty_ratio=generated["novelty_ratio"],
        error_iou=generated.get("error_iou_median"),
        zoo_error_iou=evaluation.table["rows"]["zoo"].get("error_iou_median"),
        disagreement=generated.get("disagreement_median"),
    )

    def with_evaluation(card: GeneratorCard) -> GeneratorCard:
        return card.model_copy(update={"evaluation": evaluation.table, "generated": headline})

    update_card(directory, with_evaluation)
    plot_evaluation(evaluation.table, evaluation.accuracies, Path(directory) / "evaluation.png")

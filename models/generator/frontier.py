"""Baselines at equal functional novelty: the accuracy vs error-IoU frontier of cheap methods.

A generator is only worth its cost if its networks are more accurate than what a cheap method
gives at the same functional novelty. Each baseline family has a strength knob; sweeping it
traces a curve of (median error IoU with the nearest zoo member, mean test accuracy) points,
and the family's accuracy at the generator's error IoU is read off the curve by linear
interpolation between the two swept points that bracket it (`interpolate_at`).

Families (each on the canonical zoo; strengths in brackets):
- `noise`: a zoo member plus isotropic Gaussian noise [novelty ratio r of the distance];
- `noise+repair`: the same, then each hidden neuron reset to the parent's pre-activation
  statistics (models.zoo.repair; MLPs only);
- `fisher-noise`: noise scaled by 1 / sqrt(diagonal empirical Fisher) of the parent
  (models.zoo.fisher), at the same expected distance [r];
- `interp-template`: (1 - w) a + w b of two members as aligned to the zoo's template [w];
- `interp-pairwise`: the same with b weight-matched to a itself (models.canon) [w];
- `interp-pairwise+repair`: then each hidden neuron reset to (1 - w) stats(a) + w stats(b) [w].

Every candidate gets the generator's own post-processing: BatchNorm recalibration (the
decoder) and, when the artifact screens, the same screening (pools of `screening.limit(count)`
candidates). REPAIR uses training images only; the Fisher uses labelled training images; the
accuracy and IoU of the curve are on the evaluation split. One seed picks the same members and
noise directions at every strength (common random numbers: a smoother curve). If the generator's
IoU lies outside a family's swept range, the grid is extended (smaller or larger strengths) up to
`EXTENSIONS` times, and the reading says `within_range: false` if it still lies outside.
"""

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from models.canon import spec_for
from models.generator.measure import Reference, measure_row
from models.generator.pipeline import Generator
from models.zoo.baselines import (
    AlignedPairs,
    fisher_noise_scale,
    fisher_noisy_members,
    interpolated_members,
    noisy_members,
    pairwise_aligned_pairs,
    parent_indices,
)
from models.zoo.datasets import Split
from models.zoo.fisher import diagonal_fisher
from models.zoo.repair import (
    LayerStatistics,
    interpolate_statistics,
    preactivation_statistics,
    repair,
    supports_repair,
)

FAMILIES: dict[str, tuple[str, tuple[float, ...]]] = {
    # family -> (what its strength is, default grid)
    "noise": ("novelty ratio r", (0.05, 0.1, 0.15, 0.25, 0.4, 0.6)),
    "noise+repair": ("novelty ratio r", (0.05, 0.1, 0.15, 0.25, 0.4, 0.6)),
    "fisher-noise": ("novelty ratio r", (0.05, 0.1, 0.25, 0.5, 1.0)),
    "interp-template": ("interpolation weight w", (0.05, 0.1, 0.2, 0.3, 0.5)),
    "interp-pairwise": ("interpolation weight w", (0.05, 0.1, 0.2, 0.3, 0.5)),
    "interp-pairwise+repair": ("interpolation weight w", (0.05, 0.1, 0.2, 0.3, 0.5)),
}
MAX_STRENGTH = {"interp-template": 0.5, "interp-pairwise": 0.5, "interp-pairwise+repair": 0.5}
EXTENSIONS = 2  # grid extensions per family when the target IoU lies outside the swept range
REPAIR_IMAGES = 1000  # training images REPAIR statistics are measured on
FISHER_IMAGES = 1000  # labelled training images the Fisher is averaged over
INTERPOLATED_KEYS = (
    "mean",
    "std",
    "novelty_ratio",
    "disagreement_median",
    "ensemble_accuracy_mean",
    "ensemble_nll_mean",
)


@dataclass
class FrontierContext:
    """What every sweep shares: the generator, the zoo, the data; caches what is seed-independent
    (zoo statistics for REPAIR, the Fisher) and the aligned pairs of the last seed."""

    generator: Generator
    zoo: dict[str, torch.Tensor]  # canonical stacked zoo (K, ...)
    split: Split  # evaluation split (accuracy, IoU)
    train: Split  # labelled training examples (REPAIR, Fisher)
    reference: Reference  # the zoo measured on `split`
    _zoo_statistics: list[LayerStatistics] | None = None
    _fisher_scale: torch.Tensor | None = None
    _pairs: dict[tuple[int, int], AlignedPairs] = field(default_factory=dict)

    @property
    def module(self) -> torch.nn.Module:
        return self.generator.decoder.module

    @property
    def repair_images(self) -> torch.Tensor:
        return self.train.images[:REPAIR_IMAGES].to(self.generator.device)

    def zoo_statistics(self) -> list[LayerStatistics]:
        if self._zoo_statistics is None:
            zoo = {k: v.to(self.generator.device) for k, v in self.zoo.items()}
            self._zoo_statistics = preactivation_statistics(self.module, zoo, self.repair_images)
        return self._zoo_statistics

    def fisher_scale(self) -> torch.Tensor:
        """(K, D) per-coordinate noise scale of every zoo member (models.zoo.baselines.fisher_noise_scale)."""
        if self._fisher_scale is None:
            device = self.generator.device
            fisher = diagonal_fisher(
                self.module,
                {k: v.to(device) for k, v in self.zoo.items()},
                self.train.images[:FISHER_IMAGES].to(device),
                self.train.labels[:FISHER_IMAGES].to(device),
            ).cpu()
            self._fisher_scale = fisher_noise_scale(fisher)
        return self._fisher_scale

    def pairs(self, count: int, seed: int) -> AlignedPairs:
        if (count, seed) not in self._pairs:
            self._pairs = {
                (count, seed): pairwise_aligned_pairs(
                    spec_for(self.generator.architecture),
                    self.generator.decoder.layout,
                    self.zoo,
                    count,
                    seed,
                )
            }
        return self._pairs[(count, seed)]


def available_families(generator: Generator) -> tuple[list[str], dict[str, str]]:
    """The families that apply to this architecture, and why the others are skipped."""
    skipped = {}
    if not supports_repair(generator.decoder.module):
        reason = (
            "REPAIR is implemented for MLPs (Linear layers + activations) only; "
            "networks with BatchNorm get BatchNorm recalibration instead, LayerNorm ones (ViT) neither"
        )
        skipped = {name: reason for name in FAMILIES if name.endswith("+repair")}
    return [name for name in FAMILIES if name not in skipped], skipped


def repaired(context: FrontierContext, flat: torch.Tensor, targets: list[LayerStatistics]) -> torch.Tensor:
    """REPAIR flat candidates (M, D) to targets (M, H) per hidden layer -> flat (M, D)."""
    decoder = context.generator.decoder
    state = repair(context.module, decoder.assemble(flat), context.repair_images, targets)
    return decoder.layout.flatten_stacked(state).float().cpu()


def candidate_pool(
    context: FrontierContext, family: str, strength: float, pool: int, seed: int
) -> torch.Tensor:
    """Flat candidates (pool, D) of one family at one strength."""
    reference = context.reference
    zoo_flat, loo = reference.flat, reference.loo_l2
    if family in ("noise", "noise+repair"):
        flat = noisy_members(zoo_flat, pool, strength, loo, seed)
        if family == "noise":
            return flat
        parents = parent_indices(len(zoo_flat), pool, seed)
        return repaired(context, flat, [s.index(parents) for s in context.zoo_statistics()])
    if family == "fisher-noise":
        return fisher_noisy_members(zoo_flat, context.fisher_scale(), pool, strength, loo, seed)
    if family == "interp-template":
        return interpolated_members(zoo_flat, pool, strength, seed)
    if family in ("interp-pairwise", "interp-pairwise+repair"):
        pairs = context.pairs(pool, seed)
        flat = pairs.interpolate(strength)
        if family == "interp-pairwise":
            return flat
        decoder = context.generator.decoder
        second = preactivation_statistics(context.module, decoder.assemble(pairs.b), context.repair_images)
        first = [s.index(pairs.first) for s in context.zoo_statistics()]
        return repaired(context, flat, interpolate_statistics(first, second, strength))
    raise ValueError(f"unknown baseline family {family!r}; known: {', '.join(FAMILIES)}")


def measure_pool(
    context: FrontierContext, flat: torch.Tensor, count: int, seed: int
) -> tuple[dict[str, Any], torch.Tensor]:
    """`count` finished networks from a candidate pool, post-processed as the generator's are
    (BatchNorm recalibration; screening when the artifact screens), measured on the split."""
    generator = context.generator
    decoder, screening = generator.decoder, generator.screening
    if screening is None:
        state, extra = decoder.networks(flat[:count]), {}
    else:
        state, counts = screening.screen(lambda start, n: flat[start : start + n], count, decoder)
        extra = asdict(counts)
    return measure_row(generator, state, context.split, context.reference, seed, **extra)


def measure_point(
    context: FrontierContext, family: str, strength: float, count: int, seed: int
) -> dict[str, Any]:
    screening = context.generator.screening
    pool = screening.limit(count) if screening else count
    row = measure_pool(context, candidate_pool(context, family, strength, pool, seed), count, seed)[0]
    return {"strength": strength, **row}


def interpolate_at(
    points: Sequence[dict[str, Any]], iou: float, keys: Sequence[str] = INTERPOLATED_KEYS
) -> dict[str, Any]:
    """A family's values at error IoU `iou`, linearly interpolated along its curve.

    points: swept points with `strength`, `error_iou_median` and `keys`. Following the curve in
    order of strength, every segment whose two ends bracket `iou` gives one reading; if the curve
    crosses `iou` more than once (noise), the most accurate reading is kept (the one most
    favourable to the baseline). Outside the swept range the nearest point's values are given
    with `within_range: False`.
    """
    ordered = sorted(points, key=lambda p: p["strength"])
    readings = []
    for p, q in zip(ordered, ordered[1:], strict=False):
        a, b = p["error_iou_median"], q["error_iou_median"]
        if min(a, b) <= iou <= max(a, b):
            t = 0.0 if a == b else (iou - a) / (b - a)
            reading = {k: p[k] + t * (q[k] - p[k]) for k in ("strength", *keys) if p.get(k) is not None}
            readings.append(reading)
    for p in ordered if len(ordered) == 1 else ():
        if p["error_iou_median"] == iou:
            readings.append({k: p[k] for k in ("strength", *keys) if p.get(k) is not None})
    if readings:
        best = max(readings, key=lambda r: r["mean"])
        return {**best, "error_iou_median": iou, "within_range": True, "crossings": len(readings)}
    nearest = min(ordered, key=lambda p: abs(p["error_iou_median"] - iou))
    values = {k: nearest[k] for k in ("strength", *keys) if nearest.get(k) is not None}
    return {**values, "error_iou_median": nearest["error_iou_median"], "within_range": False, "crossings": 0}


def sweep_family(
    context: FrontierContext,
    family: str,
    target_iou: float,
    count: int,
    seed: int,
    strengths: Sequence[float] | None = None,
    progress: Callable[[str, float], None] | None = None,
) -> dict[str, Any]:
    """One family's curve at `seed`, extended until it brackets `target_iou` (at most EXTENSIONS
    times each way), and its reading there."""
    what, grid = FAMILIES[family]
    points = []
    for strength in strengths or grid:
        if progress is not None:
            progress(family, strength)
        points.append(measure_point(context, family, strength, count, seed))
    cap = MAX_STRENGTH.get(family, float("inf"))
    for _ in range(EXTENSIONS):
        ious = [p["error_iou_median"] for p in points]
        low, high = min(p["strength"] for p in points), max(p["strength"] for p in points)
        if target_iou > max(ious):  # every point is more novel than the target: weaker
            strength = low / 2
        elif target_iou < min(ious) and high < cap:  # less novel than the target: stronger
            strength = min(cap, high * 1.6)
        else:
            break
        if progress is not None:
            progress(family, strength)
        points.append(measure_point(context, family, strength, count, seed))
    points.sort(key=lambda p: p["strength"])
    return {"strength": what, "points": points, "at_generator_iou": interpolate_at(points, target_iou)}


def sweep_frontier(
    context: FrontierContext,
    target_iou: float,
    count: int,
    seed: int,
    families: Sequence[str] | None = None,
    progress: Callable[[str, float], None] | None = None,
) -> dict[str, Any]:
    """Every applicable family's curve and reading at `target_iou` (the generator's median error IoU),
    `count` networks per point, plus `matched_noise`: isotropic noise at the strength read off its
    curve, measured (its ensembles are the noise ensembles of equal novelty)."""
    usable, skipped = available_families(context.generator)
    chosen = [f for f in (families or usable) if f in usable]
    result: dict[str, Any] = {
        "target_error_iou": target_iou,
        "zoo_error_iou": context.reference.novelty.error_iou_median,
        "count": count,
        "seed": seed,
        "families": {},
        "skipped": skipped,
    }
    for family in chosen:
        result["families"][family] = sweep_family(context, family, target_iou, count, seed, progress=progress)
    if "noise" in result["families"]:
        reading = result["families"]["noise"]["at_generator_iou"]
        result["matched_noise"] = {
            **measure_point(context, "noise", reading["strength"], count, seed),
            "within_range": reading["within_range"],
        }
    return result


def best_baseline(frontier: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """The family most accurate at the target IoU (readings within the swept range only)."""
    readings = [
        (name, family["at_generator_iou"])
        for name, family in frontier["families"].items()
        if family["at_generator_iou"]["within_range"]
    ]
    return max(readings, key=lambda item: item[1]["mean"]) if readings else None

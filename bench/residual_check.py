"""How much residual noise a shipped generator's flow can take: more residual noise (isotropic, or
shaped by the canonical zoo's per-weight spread) and more screening candidates per network, on
the validation split, without retraining anything.

Each variant is `LEVEL:CAP[:zoo]`: residual noise of norm LEVEL x the zoo's spread, at most CAP
candidates per network, `zoo` to shape the noise by the canonical zoo's per-weight standard
deviation (a diagonal Gaussian of the zoo) instead of isotropically.

Run: python -m bench.residual_check --architecture vit-fashion --zoo build/zoos/vit-fashion
     --variants 0.1:12 0.1:8:zoo
"""

import argparse
import dataclasses
import time
from pathlib import Path

import torch

from bench.common import report
from models.generator import Generator
from models.generator.measure import measure_row, zoo_reference
from models.levers.samplers import ShapedResidualSampler
from models.zoo.canonical import load_canonical_zoo
from models.zoo.datasets import load_dataset

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--architecture", required=True)
    parser.add_argument("--zoo", type=Path, required=True, help="the canonicalized zoo of the artifact")
    parser.add_argument("--variants", nargs="+", required=True, help="LEVEL:CAP[:zoo]")
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    generator = Generator.load(REPO / "generators" / args.architecture, device="cpu")
    if generator.screening is None:
        raise SystemExit(f"{args.architecture} has no screening: nothing to cap")
    val = load_dataset(generator.architecture.dataset).val
    reference = zoo_reference(generator, load_canonical_zoo(args.zoo, None).zoo.stacked, val)
    spread = generator.card.sampler.zoo_spread
    directions = {"isotropic": torch.ones(reference.flat.shape[1]), "zoo": reference.flat.std(0)}
    shipped_sampler, shipped_screening = generator.sampler, generator.screening

    rows = []
    for variant in args.variants:
        level, cap, *shape = variant.split(":")
        direction = directions["zoo" if shape == ["zoo"] else "isotropic"]
        sigma = direction * (float(level) * spread / direction.norm())  # (D,), norm level x spread
        generator.sampler = ShapedResidualSampler(shipped_sampler.flow, shipped_sampler.encoder, sigma)
        generator.screening = dataclasses.replace(shipped_screening, max_candidates=float(cap))
        start = time.perf_counter()
        ensemble = generator.generate(args.count, args.seed, evaluate=False)
        seconds = time.perf_counter() - start
        measured, _ = measure_row(generator, ensemble.state, val, reference, args.seed)
        rows.append(
            {
                "variant": variant,
                "val acc %": measured["mean"],
                "min %": measured["min"],
                "share >= zoo min": measured["share_at_or_above_zoo_min"],
                "r": measured["novelty_ratio"],
                "error IoU": measured["error_iou_median"],
                "disagreement": measured["disagreement_median"],
                "candidates": ensemble.metadata.screening_candidates,
                "filled": ensemble.metadata.screening_filled,
                "seconds": seconds,
            }
        )
    generator.sampler, generator.screening = shipped_sampler, shipped_screening
    zoo_stats = reference.stats
    report(
        f"residual_check_{args.architecture}",
        f"{args.architecture}: residual noise and candidates per network, validation split "
        f"(zoo {zoo_stats['mean']:.2f} %, min {zoo_stats['min']:.2f})",
        rows,
        {"zoo": zoo_stats, "count": args.count, "seed": args.seed},
    )


if __name__ == "__main__":
    main()

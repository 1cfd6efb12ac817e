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
from models.generator.evaluation import accuracy_stats, errors_and_accuracy
from models.generator.sampling import residual_noise
from models.zoo.canonical import load_canonical_zoo
from models.zoo.datasets import load_dataset
from models.zoo.novelty import novelty

REPO = Path(__file__).resolve().parents[1]


def shaped_decoder(generator: Generator, scale: torch.Tensor):
    """The sampler's decode with residual noise N(0, diag(scale^2)) (scale: (D,)) per candidate,
    drawn from the same per-candidate stream as the shipped isotropic noise."""
    sampler = generator.sampler

    def decode(codes: torch.Tensor, seed: int, start: int, residual: bool = True) -> torch.Tensor:
        flat = sampler.encoder.decode(codes.to(sampler.device))
        if residual:
            flat = flat + residual_noise(len(codes), flat.shape[1], seed, 1.0, start).to(flat.device) * scale
        return flat

    return decode


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
    layout = generator.decoder.layout
    zoo = load_canonical_zoo(args.zoo, None).zoo.stacked
    zoo_flat = layout.flatten_stacked(zoo).float()
    zoo_errors, zoo_accuracy = errors_and_accuracy(generator, zoo, val)
    zoo_stats = accuracy_stats(zoo_accuracy)
    spread = generator.card.sampler.zoo_spread
    per_weight = zoo_flat.std(0)
    isotropic = torch.full_like(per_weight, 1.0)
    shipped_decode, shipped_screening = generator.sampler.decode, generator.screening

    rows = []
    for variant in args.variants:
        level, cap, *shape = variant.split(":")
        direction = per_weight if shape == ["zoo"] else isotropic
        scale = direction * (float(level) * spread / direction.norm())
        generator.sampler.decode = shaped_decoder(generator, scale)
        generator.screening = dataclasses.replace(shipped_screening, max_candidates=float(cap))
        start = time.perf_counter()
        ensemble = generator.generate(args.count, args.seed, evaluate=False)
        seconds = time.perf_counter() - start
        errors, accuracy = errors_and_accuracy(generator, ensemble.state, val)
        measured = novelty(layout.flatten_stacked(ensemble.state).float(), errors, zoo_flat, zoo_errors)
        stats = accuracy_stats(accuracy, zoo_stats["min"])
        rows.append(
            {
                "variant": variant,
                "val acc %": stats["mean"],
                "min %": stats["min"],
                "share >= zoo min": stats["share_at_or_above_zoo_min"],
                "r": measured.novelty_ratio,
                "error IoU": measured.error_iou_median,
                "candidates": ensemble.metadata.screening_candidates,
                "filled": ensemble.metadata.screening_filled,
                "seconds": seconds,
            }
        )
    generator.sampler.decode, generator.screening = shipped_decode, shipped_screening
    report(
        f"residual_check_{args.architecture}",
        f"{args.architecture}: residual noise and candidates per network, validation split "
        f"(zoo {zoo_stats['mean']:.2f} %, min {zoo_stats['min']:.2f})",
        rows,
        {"zoo": zoo_stats, "count": args.count, "seed": args.seed},
    )


if __name__ == "__main__":
    main()

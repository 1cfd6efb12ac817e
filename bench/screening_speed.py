"""Cheaper screening at the same quality: generation time against the accuracy and novelty it buys.

For each screening variant (screening images, first-stage images, and with `unsureP` only the
images on which some zoo member gives the true class a probability below P are scored) and ODE
step count: the median seconds to generate `--count` networks in memory (no validation pass), the
candidates drawn, and the generated networks' test accuracy (mean, std, min, share at or above the
zoo's minimum), novelty ratio r and error IoU to the nearest zoo member. The thresholds of every variant are
computed from the zoo exactly as a build computes them (`screening_entry`), on the same
deterministic training images the artifact stores; the first row is the previous shipped
setting (2,500 images, one stage, RK4-16), the one every ratio is taken against.

Run: python -m bench.screening_speed [--architecture mlp-fashion] [--zoo build/zoos/mlp-fashion]
     [--variants 2500:0:16 1500:0:8:0.1 1500:0:8:0.1:unsure0.7] [--seeds 0 1 2 3 4]
"""

import argparse
from dataclasses import replace
from pathlib import Path

import torch

from bench.common import report, timed
from models.generator import Generator
from models.generator.build import screening_entry
from models.generator.data_batches import pack_batches, unpack_batches
from models.generator.decoding import NetworkDecoder
from models.generator.evaluation import accuracy_stats, errors_and_accuracy
from models.generator.recipe import GeneratorRecipe, ScreeningRecipe
from models.generator.screening import Screening
from models.zoo.canonical import load_canonical_zoo
from models.zoo.datasets import load_dataset
from models.zoo.novelty import novelty, zoo_novelty

REPO_ROOT = Path(__file__).resolve().parents[1]
# (screening images, first-stage images, RK4 steps); the first is the previous shipped setting
VARIANTS = [
    (2500, 0, 16),
    (2500, 250, 16),
    (1000, 0, 16),
    (1000, 250, 16),
    (1000, 250, 8),
    (500, 0, 8),
    (500, 100, 8),
    (250, 0, 8),
]


def with_screening(generator: Generator, dataset, recipe: GeneratorRecipe, zoo) -> Generator:
    """The generator with `recipe`'s screening (threshold from the zoo) and data batches."""
    data = recipe.data
    tensors = pack_batches(dataset, data.calibration_size, recipe.screening.images, data.validation_size)
    batches = unpack_batches(tensors, data.calibration_size, recipe.screening.images)
    decoder = NetworkDecoder(generator.architecture, generator.decoder.template, batches, generator.device)
    entry = screening_entry(zoo, generator.architecture, dataset, recipe)
    return replace(generator, decoder=decoder, screening=Screening.from_entry(entry))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--architecture", default="mlp-fashion")
    parser.add_argument("--zoo", type=Path, default=None, help="canonical zoo (default build/zoos/ARCH)")
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--variants",
        nargs="+",
        default=[":".join(map(str, v)) for v in VARIANTS],
        help="images:first-stage-images:rk4-steps[:quantile[:unsureP]], the first one the baseline of the "
        "speedups; `unsureP`: score only the images some zoo member gives below P on the true class",
    )
    args = parser.parse_args()

    shipped = Generator.load(REPO_ROOT / "generators" / args.architecture, device="cpu")
    zoo_dir = args.zoo or REPO_ROOT / "build" / "zoos" / args.architecture
    zoo = load_canonical_zoo(zoo_dir, shipped.card.zoo.template)
    dataset = load_dataset(shipped.architecture.dataset)
    recipe = GeneratorRecipe.from_dict(shipped.card.recipe)
    zoo_flat = shipped.decoder.layout.flatten_stacked(zoo.zoo.stacked).float()
    zoo_errors, zoo_accuracy = errors_and_accuracy(shipped, zoo.zoo.stacked, dataset.test)
    reference = zoo_novelty(zoo_flat, zoo_errors)
    zoo_min = accuracy_stats(zoo_accuracy)["min"]

    rows = []
    for variant in args.variants:
        images, early, steps = map(int, variant.split(":")[:3])
        extra = variant.split(":")[3:]
        quantile = float(extra[0]) if extra else recipe.screening.quantile
        unsure = float(extra[1].removeprefix("unsure")) if len(extra) > 1 else 0.0
        screening = ScreeningRecipe(
            images=images,
            quantile=quantile,
            max_candidates=recipe.screening.max_candidates,
            early_images=early,
            unsure_below=unsure,
        )
        generator = with_screening(shipped, dataset, replace(recipe, screening=screening), zoo.zoo.stacked)
        for seed in args.seeds:

            def run(g: Generator = generator, s: int = seed, n: int = steps):
                return g.generate(args.count, s, shipped.card.sampler.method, n, evaluate=False)

            seconds, ensemble = timed(run, args.repeats)
            errors, accuracy = errors_and_accuracy(generator, ensemble.state, dataset.test)
            flat = generator.decoder.layout.flatten_stacked(ensemble.state).float()
            stats = accuracy_stats(accuracy, zoo_min)
            found = novelty(flat, errors, zoo_flat, zoo_errors)
            rows.append(
                {
                    "images": images,
                    "first stage": early,
                    "rk4 steps": steps,
                    "quantile": quantile,
                    "unsure below": unsure,
                    "scored": len(generator.screening.subset or ()) or images,
                    "seed": seed,
                    "seconds": seconds,
                    "candidates": ensemble.metadata.screening_candidates,
                    "test acc %": stats["mean"],
                    "std": stats["std"],
                    "min": stats["min"],
                    ">= zoo min": stats["share_at_or_above_zoo_min"],
                    "r": found.novelty_ratio,
                    "error IoU": found.error_iou_median,
                }
            )
            print(rows[-1], flush=True)
    baseline = {row["seed"]: row["seconds"] for row in rows[: len(args.seeds)]}
    for row in rows:
        row["speedup"] = baseline[row["seed"]] / row["seconds"]
    report(
        f"screening_speed_{args.architecture}",
        f"{args.architecture}: {args.count} networks per screening variant "
        f"(CPU, {torch.get_num_threads()} threads)",
        rows,
        {"zoo_test_min": zoo_min, "zoo_error_iou_median": reference.error_iou_median, "count": args.count},
    )


if __name__ == "__main__":
    main()

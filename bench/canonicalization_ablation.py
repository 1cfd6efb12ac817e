"""Does canonicalization matter? The shipped generator's recipe trained on the canonical zoo and on
the same zoo as trained (no alignment), both measured on the test split.

    python -m bench.canonicalization_ablation --architecture vit-fashion [--zoo build/zoos/vit-fashion]

Rows: generated (as shipped, screened when the card screens) and, with residual noise, flow
only; no baselines (the shipped card has them). Both generators share the artifact's data
batches, screening threshold and sampler (the canonical row is the shipped artifact itself unless
`--iterations` asks for a refit); only the encoder and the flow (fitted on aligned or
unaligned members) and the residual noise scale (the zoo spread of those members) differ.
Writes bench/results/canonicalization_<architecture>.json.
"""

import argparse
import time
from dataclasses import replace
from pathlib import Path

import torch

from bench.common import report
from models.generator import Generator
from models.generator.build import fit_flow, zoo_spread
from models.generator.evaluation import accuracy_stats, errors_and_accuracy
from models.generator.recipe import GeneratorRecipe
from models.generator.sampling import CandidateSampler
from models.zoo.canonical import load_canonical_zoo
from models.zoo.datasets import load_dataset
from models.zoo.novelty import novelty, zoo_novelty
from models.zoo.store import load_zoo

REPO_ROOT = Path(__file__).resolve().parents[1]


def generator_for(
    shipped: Generator, stacked: dict[str, torch.Tensor], recipe: GeneratorRecipe
) -> tuple[Generator, float]:
    """The shipped generator with an encoder and flow fitted on `stacked` (K, ...) members; fit seconds."""
    start = time.perf_counter()
    encoder, flow, _ = fit_flow(stacked, shipped.architecture, recipe)
    fit_s = time.perf_counter() - start
    spread = zoo_spread(stacked, shipped.architecture)
    sigma = recipe.sampling.residual_noise * spread / shipped.decoder.layout.dim**0.5
    sampler = CandidateSampler(flow.to(shipped.device), encoder.to(shipped.device), sigma)
    return replace(shipped, sampler=sampler), fit_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--architecture", default="vit-fashion")
    parser.add_argument("--zoo", type=Path, default=None, help="zoo folder (default build/zoos/ARCH)")
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--iterations", type=int, default=None, help="flow steps (default: the card's)")
    args = parser.parse_args()

    zoo_dir = args.zoo or REPO_ROOT / "build" / "zoos" / args.architecture
    shipped = Generator.load(REPO_ROOT / "generators" / args.architecture, device="cpu")
    recipe = GeneratorRecipe.from_dict(shipped.card.recipe)
    if args.iterations is not None:
        recipe = replace(
            recipe, flow=replace(recipe.flow, train=replace(recipe.flow.train, iterations=args.iterations))
        )
    test = load_dataset(shipped.architecture.dataset).test
    zoos = {
        f"canonical ({shipped.card.zoo.template} template)": load_canonical_zoo(
            zoo_dir, shipped.card.zoo.template
        ).zoo,
        "not canonicalized": load_zoo(zoo_dir),
    }
    rows = []
    for label, zoo in zoos.items():
        if label.startswith("canonical") and args.iterations is None:
            generator, fit_s = shipped, float("nan")  # the shipped flow is this fit; no need to repeat it
        else:
            generator, fit_s = generator_for(shipped, zoo.stacked, recipe)
        zoo_errors, zoo_accuracy = errors_and_accuracy(generator, zoo.stacked, test)
        zoo_flat = generator.decoder.layout.flatten_stacked(zoo.stacked).float()
        reference = zoo_novelty(zoo_flat, zoo_errors)
        zoo_min = accuracy_stats(zoo_accuracy)["min"]
        card = shipped.card.sampler
        samples = {"generated": generator.generate(args.count, 0, evaluate=False).state}
        if generator.sampler.residual_sigma > 0:
            flat = generator.sampler.sample(args.count, 0, card.method, card.steps, residual=False)
            samples["flow only"] = generator.decoder.networks(flat)
        for row, state in samples.items():
            errors, accuracy = errors_and_accuracy(generator, state, test)
            flat = generator.decoder.layout.flatten_stacked(state).float().cpu()
            stats = accuracy_stats(accuracy, zoo_min)
            found = novelty(flat, errors, zoo_flat, zoo_errors)
            rows.append(
                {
                    "zoo": label,
                    "row": row,
                    "test acc mean %": stats["mean"],
                    "std": stats["std"],
                    ">= zoo min": stats["share_at_or_above_zoo_min"],
                    "r": found.novelty_ratio,
                    "error IoU": found.error_iou_median,
                    "zoo error IoU": reference.error_iou_median,
                    "zoo acc %": 100 * zoo_accuracy.mean().item(),
                    "flow fit s": fit_s,
                }
            )
    report(
        f"canonicalization_{args.architecture}",
        f"{args.architecture}: the shipped recipe on the canonical vs the unaligned zoo (test split)",
        rows,
        {"iterations": recipe.flow.train.iterations, "count": args.count},
    )


if __name__ == "__main__":
    main()

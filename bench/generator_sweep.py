"""Generator settings against (accuracy, novelty), with the baselines at the same novelty.

Each training setting fits an encoder + flow on the canonical zoo once; each
residual-noise level then generates `count` networks from it, measured on the
VALIDATION split (the shipped setting is chosen here, never on the test set),
next to a zoo member + Gaussian noise and an interpolation between two aligned
members at the same novelty ratio.

Choice rule (in order): the most novel setting meeting the aim (r >= 0.25 and
mean accuracy >= zoo mean - 0.5); else, among those meeting the bar (r >= 0.10,
generated-to-generated ratio >= 0.10, accuracy >= zoo mean - 1, >= 90% of
networks at or above the zoo minimum), the largest share at or above the zoo
minimum, ties going to the more novel (a screened setting that ran out of
candidates and filled with rejected ones does not count as meeting the bar);
else, among the settings novel enough for the bar (both ratios >= 0.10), the
largest share, ties going to the more accurate; else the most accurate.

With screening in the recipe (`--screening-size`, `--screening-quantile`), each
level gives two rows: the first `count` candidates unscreened, and the screened
networks, whose noise baseline is screened alike.

Each row is also printed as a JSON line as soon as it is measured;
`--table-from LOG...` rebuilds the table and the choice from such lines (for
a run that was stopped early, or several runs put together).

Run: python -m bench.generator_sweep --architecture mlp-fashion [--zoo DIR] [--quick] [--keep DIR]
"""

import argparse
import itertools
import json
import sys
import tempfile
import time
from dataclasses import astuple, replace
from pathlib import Path
from typing import Any

import torch

from bench.common import report
from models.flow import WeightEncoder, load_velocity
from models.flow.plotting import plot_loss_curve
from models.generator import Generator
from models.generator.artifact import read_card, update_card
from models.generator.build import fit_flow, write_generator
from models.generator.evaluation import evaluate_generator
from models.generator.recipe import GeneratorRecipe, recipe_for
from models.zoo.canonical import load_canonical_zoo
from models.zoo.datasets import Split, load_dataset

REPO_ROOT = Path(__file__).resolve().parents[1]


RESIDUAL_LEVELS = (0.0, 0.06, 0.09, 0.12)  # GeneratorRecipe.residual_noise tried on every flow
LOGGED_DEFAULTS = {
    "screened": False,
    "candidates per net": 1.0,
    "filled": 0,
}  # columns older logged rows lack


def settings(base: GeneratorRecipe, quick: bool) -> list[tuple[str, GeneratorRecipe, int | None]]:
    """(label, recipe, zoo members used or None for all): the flow trainings to compare."""
    it = base.flow.train.iterations

    def with_train(**kw: Any) -> GeneratorRecipe:
        return replace(base, flow=replace(base.flow, train=replace(base.flow.train, **kw)))

    def with_flow(**kw: Any) -> GeneratorRecipe:
        return replace(base, flow=replace(base.flow, **kw))

    grid = [
        ("shipped", base, None),
        ("iters x3", with_train(iterations=it * 3), None),
        ("dropout0", with_flow(dropout=0.0), None),
        ("ot-pairing", with_train(minibatch_ot=True), None),
        ("hidden256", with_flow(hidden=256), None),
        ("iters/2", with_train(iterations=max(it // 2, 100)), None),
        ("half-zoo", base, 50),
        ("pca64 (lossy)", replace(base, encoder=replace(base.encoder, n_components=64)), None),
    ]
    return grid[:3] if quick else grid


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--architecture", default="mlp-fashion")
    parser.add_argument("--zoo", type=Path, default=None)
    parser.add_argument("--template", default=None, help="canonical template kind (default: the zoo's best)")
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--baseline-count", type=int, default=None, help="networks per baseline row")
    parser.add_argument("--val-size", type=int, default=None, help="first N validation images only")
    parser.add_argument("--only", nargs="+", default=None, help="training settings to run, by label")
    parser.add_argument(
        "--residual", type=float, nargs="+", default=RESIDUAL_LEVELS, help="residual noise levels to try"
    )
    parser.add_argument(
        "--screening-size",
        type=int,
        default=None,
        help="training images to screen on (default: the recipe's)",
    )
    parser.add_argument(
        "--screening-quantile",
        type=float,
        nargs="+",
        default=None,
        help="zoo quantiles to try as the screening threshold (default: the recipe's)",
    )
    parser.add_argument(
        "--table-from", type=Path, nargs="+", default=None, help="rebuild the table from logged JSON rows"
    )
    parser.add_argument(
        "--artifact", type=Path, default=None, help="try residual levels on this built artifact's flow only"
    )
    parser.add_argument(
        "--record-in", type=Path, default=None, help="put the table in this artifact's card (settings_sweep)"
    )
    parser.add_argument("--quick", action="store_true", help="three settings only")
    parser.add_argument("--keep", type=Path, default=None, help="keep every artifact under this folder")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads (small ops run best on one)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.table_from:
        lines = [line for log in args.table_from for line in log.read_text().splitlines()]
        logged = [json.loads(line) for line in lines if line.startswith('{"setting"')]
        first: dict[str, dict[str, Any]] = {}
        for row in logged:  # the first row logged under each name
            first.setdefault(row["setting"], row)
        columns = max(first.values(), key=len).keys()  # the newest rows have every column
        rows = [{key: {**LOGGED_DEFAULTS, **row}[key] for key in columns} for row in first.values()]
        extra = {"logs": [str(log) for log in args.table_from]}
        write_table(args.architecture, rows, extra, args.record_in)
        return

    canonical = load_canonical_zoo(
        args.zoo or REPO_ROOT / "build" / "zoos" / args.architecture, args.template
    )
    architecture = canonical.zoo.architecture
    dataset = load_dataset(architecture.dataset)
    val = dataset.val if args.val_size is None else Split(*(t[: args.val_size] for t in astuple(dataset.val)))
    rows, work = [], args.keep or Path(tempfile.mkdtemp())
    grid = settings(recipe_for(architecture.name), args.quick)
    if args.artifact is not None:
        grid = [("built", GeneratorRecipe.from_dict(read_card(args.artifact).recipe), None)]
    for label, base, members in grid:
        if args.only and label not in args.only:
            continue
        stacked = canonical.zoo.stacked
        if members is not None:
            stacked = {k: v[:members] for k, v in stacked.items()}
        start = time.perf_counter()
        if args.artifact is None:
            encoder, flow, history = fit_flow(stacked, architecture, base)
        else:
            encoder = WeightEncoder.load(args.artifact / "encoder.safetensors")
            flow, history = load_velocity(args.artifact / "flow.safetensors", device="cpu"), []
        fit_s = time.perf_counter() - start
        if args.screening_size is not None:
            base = replace(base, screening=replace(base.screening, images=args.screening_size))
        quantiles = args.screening_quantile or [base.screening.quantile]
        flow_entry = {"final_loss": sum(history[-100:]) / len(history[-100:])} if history else {}
        for level, quantile in itertools.product(args.residual, quantiles):
            recipe = replace(
                base,
                sampling=replace(base.sampling, residual_noise=level),
                screening=replace(base.screening, quantile=quantile),
            )
            name = f"{label} + residual {level:.2f}"
            directory = work / name.replace(" ", "_").replace("/", "-") / architecture.name
            write_generator(directory, canonical, dataset, recipe, encoder, flow, flow_entry, members)
            if history:
                plot_loss_curve(history, directory / "loss.png")
            generator = Generator.load(directory, device="cpu")
            screening = generator.screening
            table = evaluate_generator(
                generator,
                stacked,
                val,
                args.count,
                steps_sweep=(),
                split_name="val",
                baseline_count=args.baseline_count,
            ).table["rows"]
            size = members or canonical.zoo.size
            if screening is not None:  # the same candidates, unscreened, are a row of their own
                if all(row["setting"] != name for row in rows):  # once per residual level
                    rows.append(sweep_row(name, recipe, size, fit_s, table, "unscreened"))
                    print(json.dumps(rows[-1]), flush=True)
                name += f" + screening q{recipe.screening.quantile:.2f}"
            rows.append(sweep_row(name, recipe, size, fit_s, table, "generated"))
            print(json.dumps(rows[-1]), flush=True)
    extra = {
        "template": canonical.kind,
        "validation_images": len(val),
        "count": args.count,
        "baseline_count": args.baseline_count or args.count,
    }
    write_table(architecture.name, rows, extra, args.record_in)


def write_table(
    architecture: str, rows: list[dict[str, Any]], extra: dict[str, Any], record_in: Path | None = None
) -> None:
    """Print the settings table, write bench/results/generator_sweep_<architecture>.json, name the
    choice; with `record_in`, also put it in that artifact's card as `settings_sweep`."""
    chosen = choose(rows)
    title = f"{architecture}: settings vs (accuracy, novelty) on the validation split"
    report(f"generator_sweep_{architecture}", title, rows, {"chosen": chosen, **extra})
    print(f"chosen on validation: {chosen}")
    if record_in is not None:
        command = "python -m bench.generator_sweep " + " ".join(sys.argv[1:])
        sweep = {"split": "val", "command": command, **extra, "chosen": chosen, "rows": rows}
        update_card(record_in, lambda card: card.model_copy(update={"settings_sweep": sweep}))
        print(f"recorded in {record_in / 'card.json'}")


def sweep_row(
    name: str, recipe: GeneratorRecipe, members: int, fit_s: float, table: dict[str, Any], key: str
) -> dict[str, Any]:
    """One line of the settings table: evaluation row `key` ("generated" or "unscreened") of the
    setting, then (accuracy, novelty) and the baselines at the generated networks' r (the noise
    baseline screened alike when the row is)."""
    zoo, gen = table["zoo"], table[key]
    screened = key == "generated" and "candidates" in gen
    noise = next(
        v for k, v in table.items() if k.startswith("noise@") and k.endswith(" screened") == screened
    )
    interp = next(v for k, v in table.items() if k.startswith("interp@"))
    return {
        "setting": name,
        "pca": str(recipe.encoder.n_components),
        "hidden": recipe.flow.hidden,
        "iters": recipe.flow.train.iterations,
        "members": members,
        "residual": recipe.sampling.residual_noise,
        "screened": screened,
        "candidates per net": gen["candidates"] / gen["count"] if screened else 1.0,
        "filled": gen["filled"] if screened else 0,
        "fit s": fit_s,
        "zoo acc": zoo["mean"],
        "gen acc": gen["mean"],
        "gen min": gen["min"],
        ">= zoo min": gen["share_at_or_above_zoo_min"],
        "r": gen["novelty_ratio"],
        "gen-gen r": gen["self_l2_median"] / zoo["nearest_zoo_l2_median"],
        "IoU": gen["error_iou_median"],
        "zoo IoU": zoo["error_iou_median"],
        "noise acc @r": noise["mean"],
        "noise >= min": noise["share_at_or_above_zoo_min"],
        "interp acc @r": interp["mean"],
    }


def choose(rows: list[dict[str, Any]]) -> str:
    aim = [r for r in rows if r["r"] >= 0.25 and r["gen acc"] >= r["zoo acc"] - 0.5]
    if aim:
        return max(aim, key=lambda r: r["r"])["setting"]
    novel = [r for r in rows if r["r"] >= 0.10 and r["gen-gen r"] >= 0.10]
    bar = [
        r for r in novel if r["gen acc"] >= r["zoo acc"] - 1.0 and r[">= zoo min"] >= 0.9 and not r["filled"]
    ]
    if bar:
        return max(bar, key=lambda r: (r[">= zoo min"], r["r"]))["setting"]
    if novel:
        return max(novel, key=lambda r: (r[">= zoo min"], r["gen acc"]))["setting"]
    return max(rows, key=lambda r: r["gen acc"])["setting"]


if __name__ == "__main__":
    main()

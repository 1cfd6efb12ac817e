"""Does a ViT zoo line up better under rotations than under permutations?

    python -m bench.vit_alignment --zoo build/zoos/vit-fashion [--pairs 3] [--write-canonical DIR]

For pairs of members (0, 1), (2, 3), ...: the test-loss barrier along the straight path and the
accuracy 10% and 50% of the way, as trained, after weight matching with TransFusion (the shipped
canonicalization), and after functional alignment (models.canon.functional_alignment: LayerNorms
folded, stream rotated, MLP units and heads matched on activations); and the zoo's mean pairwise
distance under each (the canonical one from the zoo's summary). `--write-canonical DIR` also
writes the whole zoo aligned functionally as DIR (a hard-linked copy of the zoo with
`canonical/functional`, the summary's best), for `python -m bench.generator_sweep --zoo DIR`.
Writes bench/results/vit_alignment.json and docs/figures/vit_alignment.png (test loss and
accuracy along each path).
"""

import argparse
import json
import os
import time
from pathlib import Path

import torch

from bench.common import report, save_figure
from contract.files import atomic_write_text
from models.canon import apply_permutation, run_weight_matching, spec_for
from models.canon.functional_alignment import functional_align
from models.weightspace import interpolation_path, loss_barrier
from models.zoo.canonical import (
    CANONICAL_DIR,
    SUMMARY,
    read_summary,
    validation_accuracy,
    write_canonical_zoo,
)
from models.zoo.datasets import Split, load_dataset
from models.zoo.store import load_zoo
from models.zoo.templates import TemplateResult, flat_parameters, mean_pairwise_distance, member

PATH_POINTS = 11  # t = 0, 0.1, ..., 1
FIGURE = Path(__file__).resolve().parents[1] / "docs" / "figures" / "vit_alignment.png"
StraightPath = dict[str, list[float]]  # "loss" and "accuracy" (PATH_POINTS,) along one straight path
CALIBRATION_IMAGES = 256  # training images whose activations alignment compares


def straight_path(module: torch.nn.Module, a: dict, b: dict, test: Split) -> StraightPath:
    """Test loss and accuracy % at t = 0, 0.1, ..., 1 on the straight path from a to b."""
    losses, accuracy = interpolation_path(module, a, b, test.images, test.labels, PATH_POINTS)
    return {"loss": losses.tolist(), "accuracy": (100 * accuracy).tolist()}


def path_figures(path: StraightPath) -> dict[str, float]:
    """Barrier (max over t of loss(t) minus the endpoints' line) and accuracy at t = 0.1 and 0.5."""
    accuracy = path["accuracy"]
    return {
        "barrier": loss_barrier(torch.tensor(path["loss"])),
        "ends acc %": (accuracy[0] + accuracy[-1]) / 2,
        "acc at t=0.1 %": accuracy[1],
        "acc at t=0.5 %": accuracy[PATH_POINTS // 2],
    }


def plot(paths: dict[str, dict[str, StraightPath]], out: Path) -> None:
    """One column per pair: test loss (top) and accuracy (bottom) against t, a line per alignment."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(paths), figsize=(4 * len(paths), 6), squeeze=False, sharex=True)
    ts = torch.linspace(0, 1, PATH_POINTS).tolist()
    for column, (pair, by_alignment) in enumerate(paths.items()):
        for name, path in by_alignment.items():
            axes[0][column].plot(ts, path["loss"], marker=".", label=name)
            axes[1][column].plot(ts, path["accuracy"], marker=".", label=name)
        axes[0][column].set_title(f"members {pair}", fontsize=9)
        axes[1][column].set_xlabel("t (straight path from one member to the other)")
    axes[0][0].set_ylabel("test loss")
    axes[1][0].set_ylabel("test accuracy %")
    axes[1][0].legend(fontsize=7)
    save_figure(fig, out)


def write_functional_zoo(
    source: Path, out: Path, aligned: dict, reference: int, before: float, val: Split
) -> None:
    """`out`: the zoo's files hard-linked, plus canonical/functional holding `aligned` (K, ...)
    (each member re-measured on the validation split `val`)."""
    out.mkdir(parents=True, exist_ok=True)
    for path in source.iterdir():
        if path.is_file() and not (out / path.name).exists():
            os.link(path, out / path.name)
    zoo = load_zoo(out)
    val_acc = validation_accuracy(zoo, aligned, val)
    template = {k: v.mean(0) for k, v in aligned.items()}
    after = mean_pairwise_distance(flat_parameters(zoo.architecture, aligned))
    info = {
        "template": "functional",
        "source": str(out),
        "source_content_hash": zoo.manifest.content_hash,
        "reference_member": reference,
        "mean_pairwise_distance_before": before,
        "mean_pairwise_distance_after": after,
        "max_val_acc_change": (val_acc - zoo.metric("val_acc")).abs().max().item(),
    }
    result = TemplateResult("functional", template, aligned, permutations=[], reference=reference)
    write_canonical_zoo(zoo, result, info, val_acc)
    summary = {"source_content_hash": zoo.manifest.content_hash, "templates": {"functional": info}}
    summary |= {"mean_pairwise_distance_before": before, "best": "functional"}
    atomic_write_text(out / CANONICAL_DIR / SUMMARY, json.dumps(summary, indent=2))
    print(f"wrote {out} (max validation accuracy change {info['max_val_acc_change']:.2e})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--zoo", type=Path, default=Path("build/zoos/vit-fashion"))
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3, help="alignment rounds over the zoo")
    parser.add_argument("--write-canonical", type=Path, help="write the functionally aligned zoo here")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    zoo = load_zoo(args.zoo)
    architecture = zoo.architecture
    dataset = load_dataset(architecture.dataset)
    test, images = dataset.test, dataset.train.images[:CALIBRATION_IMAGES]
    summary = read_summary(args.zoo)
    if summary is None:
        raise SystemExit(f"{args.zoo} has no canonical zoo; run `dwf zoo canonicalize {args.zoo}` first")
    reference = summary["templates"]["medoid"]["reference_member"]

    start = time.perf_counter()
    aligned = functional_align(architecture, zoo.stacked, images, reference, args.rounds)
    align_s = time.perf_counter() - start
    spec, module = spec_for(architecture), architecture.build()
    rows, paths = [], {}
    for pair in range(args.pairs):
        i, j = 2 * pair, 2 * pair + 1
        a, b = member(zoo.stacked, i), member(zoo.stacked, j)
        matched = apply_permutation(spec, run_weight_matching(spec, a, b).permutations, b)
        # The zoo-wide alignment puts both onto the zoo's mean targets; this one puts j onto i.
        pair_members = {k: torch.stack([a[k], b[k]]) for k in a}
        pairwise = functional_align(architecture, pair_members, images, reference=0, rounds=1)
        ends = {
            "as trained": (a, b),
            "weight matching + TransFusion": (a, matched),
            "functional (pair)": (member(pairwise, 0), member(pairwise, 1)),
            "functional (zoo targets)": (member(aligned, i), member(aligned, j)),
        }
        paths[f"{i}-{j}"] = {name: straight_path(module, x, y, test) for name, (x, y) in ends.items()}
        for name, path in paths[f"{i}-{j}"].items():
            rows.append({"pair": f"{i}-{j}", "alignment": name, **path_figures(path)})
            print(rows[-1], flush=True)
    before = mean_pairwise_distance(flat_parameters(architecture, zoo.stacked))
    distances = {
        "as trained": before,
        "weight matching + TransFusion": min(
            t["mean_pairwise_distance_after"] for t in summary["templates"].values()
        ),
        "functional (zoo targets)": mean_pairwise_distance(flat_parameters(architecture, aligned)),
    }
    extra = {"mean_pairwise_distance": distances, "functional_align_s": align_s, "rounds": args.rounds}
    extra |= {"paths": paths}
    print({"mean pairwise distance": distances, "alignment s": round(align_s, 1)})
    report("vit_alignment", f"ViT alignment: {args.zoo} ({len(zoo.manifest.seeds)} members)", rows, extra)
    plot(paths, FIGURE)
    if args.write_canonical:
        write_functional_zoo(args.zoo, args.write_canonical, aligned, reference, before, dataset.val)


if __name__ == "__main__":
    main()

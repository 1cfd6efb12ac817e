"""PNG figures of a generator evaluation (models.generator.evaluation): accuracy distributions, accuracy
vs error IoU (the rows and the baseline frontier), and steps."""

from pathlib import Path
from typing import Any

import torch

FAMILY_COLORS = {
    "noise": "tab:gray",
    "noise+repair": "tab:brown",
    "fisher-noise": "tab:purple",
    "interp-template": "tab:olive",
    "interp-pairwise": "tab:cyan",
    "interp-pairwise+repair": "tab:green",
}


def plot_frontier_axis(
    axis: Any,
    frontiers: list[dict[str, Any]],
    generated: list[tuple[float, float]],
    zoo: tuple[float, float],
    rows: dict[str, dict[str, Any]] | None = None,
) -> None:
    """Accuracy (%) vs median error IoU with the nearest zoo member on one matplotlib axis.

    frontiers: models.generator.frontier results (one per seed; each family's curve drawn per
    seed, labelled once); generated: (IoU, mean accuracy) of the generator, one per seed; zoo:
    (leave-one-out IoU, mean accuracy), drawn as a vertical line and a point; rows: other table
    rows as labelled points. Lower IoU is more novel: the axis runs from right (copies) to left.
    """
    labelled: set[str] = set()
    for frontier in frontiers:
        for name, family in frontier["families"].items():
            points = family["points"]
            axis.plot(
                [p["error_iou_median"] for p in points],
                [p["mean"] for p in points],
                marker=".",
                linewidth=1,
                alpha=0.8,
                color=FAMILY_COLORS.get(name, "black"),
                label=None if name in labelled else name,
            )
            labelled.add(name)
    for name, row in (rows or {}).items():
        if name in ("zoo", "generated") or row.get("error_iou_median") is None:
            continue
        axis.scatter([row["error_iou_median"]], [row["mean"]], s=12, color="black", marker="x")
        axis.annotate(name, (row["error_iou_median"], row["mean"]), fontsize=6, alpha=0.7)
    axis.axvline(zoo[0], color="tab:blue", linestyle="--", linewidth=1, label="zoo leave-one-out IoU")
    axis.scatter([zoo[0]], [zoo[1]], s=40, color="tab:blue", marker="s", zorder=3, label="zoo")
    axis.scatter(
        [g[0] for g in generated],
        [g[1] for g in generated],
        s=50,
        color="tab:orange",
        marker="*",
        zorder=4,
        label="generated",
    )
    axis.set_xlabel("median error IoU with the nearest zoo member (lower: more novel)")
    axis.set_ylabel("mean test accuracy (%)")
    axis.legend(fontsize=7)


def plot_evaluation(table: dict[str, Any], accuracies: dict[str, torch.Tensor], path: Path) -> Path:
    """Left: every network's test accuracy, one row of dots per table row (zoo, generated,
    baselines), with the zoo's minimum marked; second: the same near the zoo's range, where the
    bar is decided; third: accuracy vs error IoU (rows, and each baseline family's curve when
    the table has a frontier); right: accuracy vs sampler steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    zoo = table["rows"]["zoo"]
    fig, (full, near, frontier_axis, steps_axis) = plt.subplots(
        1,
        4,
        figsize=(21, max(0.4 * len(accuracies) + 2.2, 5.5)),
        gridspec_kw={"width_ratios": [1, 1, 1.2, 0.8]},
    )
    names = list(accuracies)[::-1]  # zoo on top
    generator = torch.Generator().manual_seed(0)  # fixed jitter: the same table gives the same figure
    for axis, title in ((full, "test accuracy of every network"), (near, "near the zoo's range")):
        for row, name in enumerate(names):
            values = accuracies[name].double() * 100
            jitter = (torch.rand(len(values), generator=generator) - 0.5) * 0.5
            color = "tab:blue" if name == "zoo" else "tab:orange" if name == "generated" else "gray"
            axis.scatter(values.tolist(), (row + jitter).tolist(), s=6, alpha=0.6, color=color)
            axis.plot([values.mean().item()] * 2, [row - 0.35, row + 0.35], color="black", linewidth=1.5)
        axis.axvline(zoo["min"], color="tab:red", linestyle="--", linewidth=1, label="zoo minimum")
        axis.set_yticks(range(len(names)), names, fontsize=8)
        axis.set_xlabel("test accuracy (%)")
        axis.set_title(title)
    near.set_xlim(zoo["min"] - 4 * max(zoo["std"], 0.1), zoo["max"] + 2 * max(zoo["std"], 0.1))
    near.legend(fontsize=8, loc="lower left")
    rows = table["rows"]
    generated = rows["generated"]
    if zoo.get("error_iou_median") is not None:
        plot_frontier_axis(
            frontier_axis,
            [table["frontier"]] if "frontier" in table else [],
            [(generated["error_iou_median"], generated["mean"])],
            (zoo["error_iou_median"], zoo["mean"]),
            rows,
        )
        # the zoo's neighbourhood: far-off rows (pca-gaussian) and the weakest baselines fall below
        frontier_axis.set_ylim(zoo["mean"] - max(5 * zoo["std"], 3.0), zoo["max"] + max(zoo["std"], 0.1))
    frontier_axis.set_title("accuracy vs functional novelty")
    sweep = table["steps_sweep"]
    steps = [row["steps"] for row in sweep]
    means = [row["mean"] for row in sweep]
    steps_axis.errorbar(steps, means, yerr=[row["std"] for row in sweep], marker="o", capsize=3)
    steps_axis.axhline(zoo["mean"], color="gray", linestyle="--", label="zoo mean")
    steps_axis.set_xscale("log", base=2)
    steps_axis.set_xlabel(f"{sweep[0]['sampler']} steps")
    steps_axis.set_ylabel("test accuracy (%), unscreened samples")
    steps_axis.legend(fontsize=8)
    steps_axis.set_title("accuracy vs sampler steps")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path

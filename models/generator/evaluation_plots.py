"""PNG figures of a generator evaluation (models.generator.evaluation): accuracy distributions and steps."""

from pathlib import Path
from typing import Any

import torch


def plot_evaluation(table: dict[str, Any], accuracies: dict[str, torch.Tensor], path: Path) -> Path:
    """Left: every network's test accuracy, one row of dots per table row (zoo, generated,
    baselines), with the zoo's minimum marked; middle: the same near the zoo's range, where the
    bar is decided; right: accuracy vs sampler steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    zoo = table["rows"]["zoo"]
    fig, (full, near, steps_axis) = plt.subplots(
        1, 3, figsize=(15, 0.4 * len(accuracies) + 2.2), gridspec_kw={"width_ratios": [1, 1, 0.8]}
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

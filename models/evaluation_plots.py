"""PNG figures of a generator evaluation (models.evaluation): accuracy distributions and steps."""

from pathlib import Path
from typing import Any

import torch


def plot_evaluation(table: dict[str, Any], accuracies: dict[str, torch.Tensor], path: Path) -> Path:
    """Left: test-accuracy histograms per row (zoo, generated, baselines); right: accuracy vs steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8))
    values = torch.cat([a for a in accuracies.values()]) * 100
    low = max(values.min().item(), table["rows"]["zoo"]["min"] - 10)
    bins = torch.linspace(low, values.max().item(), 30).tolist()
    for name, accuracy in accuracies.items():
        left.hist((accuracy * 100).clamp_min(low).tolist(), bins=bins, alpha=0.5, label=name)
    left.set_xlabel("test accuracy (%)")
    left.set_ylabel("networks")
    left.legend(fontsize=8)
    left.set_title("accuracy distributions")
    sweep = table["steps_sweep"]
    steps = [row["steps"] for row in sweep]
    means = [row["mean"] for row in sweep]
    right.errorbar(steps, means, yerr=[row["std"] for row in sweep], marker="o", capsize=3)
    right.axhline(table["rows"]["zoo"]["mean"], color="gray", linestyle="--", label="zoo mean")
    right.set_xscale("log", base=2)
    right.set_xlabel(f"{sweep[0]['sampler']} steps")
    right.set_ylabel("generated test accuracy (%)")
    right.legend(fontsize=8)
    right.set_title("accuracy vs sampler steps")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path

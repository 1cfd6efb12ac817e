"""Summaries of a zoo's per-member metrics: statistics and a histogram figure."""

from pathlib import Path

import torch

from models.zoo.store import ZooManifest

SPLITS = ("train", "val", "test")
HISTOGRAM = "accuracy_hist.png"


def accuracy_stats(manifest: ZooManifest) -> dict[str, dict[str, float]]:
    """split -> {"mean", "std", "min", "max"} of member accuracy in [0, 1] (std: sample, ddof 1)."""
    stats = {}
    for split in SPLITS:
        acc = torch.tensor([m[f"{split}_acc"] for m in manifest.members], dtype=torch.float64)
        std = acc.std().item() if len(acc) > 1 else 0.0
        stats[split] = {"mean": acc.mean().item(), "std": std, "min": acc.min().item()}
        stats[split]["max"] = acc.max().item()
    return stats


def plot_accuracy_histogram(manifest: ZooManifest, path: str | Path) -> Path:
    """Write a PNG with one histogram of member accuracy (%) per split."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(SPLITS), figsize=(4 * len(SPLITS), 3.2), sharey=True)
    for ax, split in zip(axes, SPLITS, strict=True):
        acc = [100 * m[f"{split}_acc"] for m in manifest.members]
        ax.hist(acc, bins=20, color="tab:blue", edgecolor="white")
        ax.set_title(f"{split} accuracy")
        ax.set_xlabel("accuracy (%)")
    axes[0].set_ylabel("members")
    fig.suptitle(f"{manifest.architecture['name']} zoo: {manifest.size} members")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)

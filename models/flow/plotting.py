"""Training-loss curve as a PNG (matplotlib's Agg canvas; no pyplot, no display).

Kept apart from the trainer so that importing the flow does not import matplotlib.
"""

from collections.abc import Sequence
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def smooth(values: Sequence[float], smoothing: float) -> list[float]:
    """Bias-corrected exponential moving average: each point weighs past points by `smoothing`."""
    average, weight, out = 0.0, 0.0, []
    for value in values:
        average = smoothing * average + (1 - smoothing) * value
        weight = smoothing * weight + (1 - smoothing)
        out.append(average / weight)
    return out


def plot_loss_curve(history: Sequence[float], path: str | Path, smoothing: float = 0.98) -> None:
    """Write the per-step loss (faint) and its EMA (line) on a log-scale y axis to a PNG at `path`."""
    figure = Figure(figsize=(6.4, 4.0), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    steps = range(1, len(history) + 1)
    axes.plot(steps, history, color="tab:blue", alpha=0.25, linewidth=0.8, label="loss")
    axes.plot(steps, smooth(history, smoothing), color="tab:blue", linewidth=1.8, label="EMA")
    axes.set_yscale("log")
    axes.set_xlabel("step")
    axes.set_ylabel("flow-matching loss")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(str(path), format="png")

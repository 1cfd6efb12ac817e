"""Shared benchmark plumbing: machine description, a printed table, a JSON record."""

import json
import os
import platform
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def machine() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def timed(fn: Callable[[], Any], repeats: int = 3) -> tuple[float, Any]:
    """Median wall time in seconds over `repeats` calls, and the last result."""
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2], result


def save_figure(fig: Any, path: Path, dpi: int = 90) -> Path:
    """Lay out a matplotlib figure, write it as a PNG at `path` (folders made), close it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    print(f"wrote {path}")
    return path


def cell(value: Any) -> str:
    """A table cell: floats to 4 significant digits, None (not applicable) as a dash."""
    if value is None:
        return "-"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def report(
    name: str, title: str, rows: Sequence[dict[str, Any]], extra: dict[str, Any] | None = None
) -> Path:
    """Print `rows` as a table and write them with the machine description to results/<name>.json,
    and as a markdown table to results/<name>.md."""
    table = Table(title=title)
    for column in rows[0]:
        numeric = any(isinstance(row[column], int | float) for row in rows)
        table.add_column(column, justify="right" if numeric else "left")
    for row in rows:
        table.add_row(*(cell(v) for v in row.values()))
    Console(width=200).print(table)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    payload = {"benchmark": name, "machine": machine(), "rows": list(rows), **(extra or {})}
    path.write_text(json.dumps(payload, indent=2))
    markdown = [f"| {' | '.join(rows[0])} |", f"|{'---|' * len(rows[0])}"]
    markdown += [f"| {' | '.join(cell(v) for v in row.values())} |" for row in rows]
    (RESULTS_DIR / f"{name}.md").write_text(f"{title}\n\n" + "\n".join(markdown) + "\n")
    print(f"wrote {path} and {path.with_suffix('.md')}")
    return path

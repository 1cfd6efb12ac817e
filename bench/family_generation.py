"""Time to generate 100 networks from every shipped generator, at its shipped setting.

Per family: seconds to the stacked state dicts in memory, seconds to write them as a safetensors
result file (`write_result`, the bytes a job hands out), and their sum (to a file), the candidates
drawn (screening), the result's size and the generated networks' mean test accuracy (on the first
`--examples` test images when given: ResNet and ViT forwards are costly on a CPU). Median of
`--repeats` runs each. Rows of families measured in earlier runs are kept (one run per family is
enough on a shared machine); `--count` and `--repeats` are recorded per row.

Run: python -m bench.family_generation [--count 100] [--families vit-fashion resnet20-fashion]
     [--repeats 1] [--examples 2000]
"""

import argparse
import json
import tempfile
from pathlib import Path

from bench.common import RESULTS_DIR, report, timed
from models.generator import Generator, write_result
from models.generator.artifact import discover_generators
from models.weightspace import batched_evaluate
from models.zoo.datasets import load_dataset

REPO_ROOT = Path(__file__).resolve().parents[1]


def family_row(generator: Generator, count: int, repeats: int, out_dir: Path, examples: int | None) -> dict:
    """One family's timings at the card's sampler setting, screened when the card screens."""
    card = generator.card

    def run():
        return generator.generate(count, 0, card.sampler.method, card.sampler.steps, evaluate=False)

    memory_s, ensemble = timed(run, repeats)
    result = out_dir / f"{card.name}.safetensors"
    write_s, _ = timed(lambda: write_result(result, ensemble), repeats)
    test = load_dataset(generator.architecture.dataset).test
    images, labels = test.images[:examples], test.labels[:examples]
    accuracy = batched_evaluate(generator.decoder.module, ensemble.state, images, labels)[1]
    return {
        "family": card.name,
        "parameters": card.parameter_count,
        "sampler": f"{card.sampler.method} {card.sampler.steps}",
        "candidates": ensemble.metadata.screening_candidates or count,
        "to memory s": memory_s,
        "write s": write_s,
        "to file s": memory_s + write_s,
        "file MB": result.stat().st_size / 1e6,
        "test acc mean %": 100 * accuracy.mean().item(),
        "test images": len(labels),
        "count": count,
        "repeats": repeats,
    }


def earlier_rows(measured: set[str]) -> list[dict]:
    """Rows of the last report for families not measured now (older rows lack the newer columns)."""
    path = RESULTS_DIR / "family_generation.json"
    if not path.is_file():
        return []
    rows = json.loads(path.read_text()).get("rows", [])
    return [row for row in rows if row["family"] not in measured and "write s" in row]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--generators", type=Path, default=REPO_ROOT / "generators")
    parser.add_argument("--families", nargs="+", default=None, help="default: every shipped generator")
    parser.add_argument("--examples", type=int, default=None, help="test images for the accuracy column")
    args = parser.parse_args()

    families = args.families or sorted(discover_generators(args.generators))
    out_dir = Path(tempfile.mkdtemp())
    rows = []
    for name in families:
        generator = Generator.load(args.generators / name, device="cpu")
        rows.append(family_row(generator, args.count, args.repeats, out_dir, args.examples))
        print(f"{name}: {rows[-1]['to memory s']:.2f} s to memory", flush=True)
    rows = sorted(earlier_rows(set(families)) + rows, key=lambda row: row["family"])
    report("family_generation", "Generate networks per shipped family (CPU, shipped setting)", rows)


if __name__ == "__main__":
    main()

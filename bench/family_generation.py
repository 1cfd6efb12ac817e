"""Time to generate 100 networks from every shipped generator, at its shipped setting.

Per family: seconds to the stacked state dicts in memory and to a safetensors result file
(`write_result`, the bytes a job hands out), the candidates drawn (screening), the result's
size and the generated networks' mean test accuracy. Median of `--repeats` runs each.

Run: python -m bench.family_generation [--count 100] [--families vit-fashion resnet20-fashion]
"""

import argparse
import tempfile
from pathlib import Path

from bench.common import report, timed
from models.generator import Generator, write_result
from models.generator.artifact import discover_generators
from models.weightspace import batched_evaluate
from models.zoo.datasets import load_dataset

REPO_ROOT = Path(__file__).resolve().parents[1]


def family_row(generator: Generator, count: int, repeats: int, out_dir: Path) -> dict:
    """One family's timings at the card's sampler setting, screened when the card screens."""
    card = generator.card

    def run():
        return generator.generate(count, 0, card.sampler.method, card.sampler.steps, evaluate=False)

    memory_s, ensemble = timed(run, repeats)
    result = out_dir / f"{card.name}.safetensors"
    file_s, _ = timed(lambda: write_result(result, run()), repeats)
    test = load_dataset(generator.architecture.dataset).test
    accuracy = batched_evaluate(generator.decoder.module, ensemble.state, test.images, test.labels)[1]
    return {
        "family": card.name,
        "parameters": card.parameter_count,
        "sampler": f"{card.sampler.method} {card.sampler.steps}",
        "candidates": ensemble.metadata.screening_candidates or count,
        "to memory s": memory_s,
        "to file s": file_s,
        "file MB": result.stat().st_size / 1e6,
        "test acc mean %": 100 * accuracy.mean().item(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--generators", type=Path, default=REPO_ROOT / "generators")
    parser.add_argument("--families", nargs="+", default=None, help="default: every shipped generator")
    args = parser.parse_args()

    families = args.families or sorted(discover_generators(args.generators))
    out_dir = Path(tempfile.mkdtemp())
    rows = [
        family_row(Generator.load(args.generators / name, device="cpu"), args.count, args.repeats, out_dir)
        for name in families
    ]
    report(
        "family_generation",
        f"Generate {args.count} networks per shipped family (CPU, shipped setting)",
        rows,
        {"count": args.count, "repeats": args.repeats},
    )


if __name__ == "__main__":
    main()

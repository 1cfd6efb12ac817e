"""Time to generate networks from a shipped generator, per sampler and step count.

For each (sampler, steps): seconds to 100 state dicts in memory and to a
safetensors file on disk, with the generated networks' mean test accuracy;
unscreened, then the shipped setting as shipped (screened, when the card says so).
In the same run: the reference configuration (RK4 with 99 steps in the full
weight space, hidden size 512: a velocity network of ~121M parameters for
mlp-fashion; timed only, untrained) as a ratio, and the time to write the same
bytes with safetensors alone.

Run: python -m bench.generation [--architecture mlp-fashion] [--count 100]
"""

import argparse
import tempfile
import time
from pathlib import Path

from safetensors.torch import save_file

from bench.common import report, timed
from models.flow import VelocityConfig, VelocityMLP, generate_codes
from models.generator import Generator, write_result
from models.weightspace import batched_evaluate
from models.zoo.datasets import load_dataset

REPO_ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--architecture", default="mlp-fashion")
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--generators", type=Path, default=REPO_ROOT / "generators")
    args = parser.parse_args()

    generator = Generator.load(args.generators / args.architecture, device="cpu")
    test = load_dataset(generator.architecture.dataset).test
    out_dir = Path(tempfile.mkdtemp())
    rows = []
    settings = (
        [("euler", s) for s in (4, 8, 16)]
        + [("midpoint", s) for s in (4, 8)]
        + [("rk4", s) for s in (2, 4, 8, 16)]
    )
    shipped_setting = (generator.card.sampler.method, generator.card.sampler.steps)
    runs = [(*setting, False) for setting in dict.fromkeys([*settings, shipped_setting])]
    if generator.screening is not None:
        runs.append((*shipped_setting, True))
    for method, steps, screen in runs:

        def run(m: str = method, s: int = steps, sc: bool = screen):
            return generator.generate(args.count, 0, m, s, evaluate=False, screen=sc)

        memory_s, ensemble = timed(run)
        file_s, _ = timed(lambda: write_result(out_dir / "out.safetensors", run()))
        accuracy = batched_evaluate(generator.decoder.module, ensemble.state, test.images, test.labels)[1]
        rows.append(
            {
                "sampler": method,
                "steps": steps,
                "screened": screen,
                "candidates": ensemble.metadata.screening_candidates or args.count,
                "to memory s": memory_s,
                "to file s": file_s,
                "test acc mean %": 100 * accuracy.mean().item(),
            }
        )

    payload = ensemble.state
    raw_s, _ = timed(lambda: save_file(payload, str(out_dir / "raw.safetensors")))
    megabytes = sum(t.numel() * t.element_size() for t in payload.values()) / 1e6

    dim = generator.decoder.layout.dim
    reference = VelocityMLP(VelocityConfig(dim=dim, hidden=512)).eval()
    reference_params = sum(p.numel() for p in reference.parameters())
    start = time.perf_counter()
    generate_codes(reference, args.count, dim, seed=0, method="rk4", steps=99)
    reference_s = time.perf_counter() - start

    shipped = rows[-1]
    for row in rows:
        row["vs reference"] = reference_s / row["to file s"]
        row["vs raw write"] = row["to file s"] / raw_s
    rows.append(
        {
            "sampler": "reference rk4 (no PCA, h=512)",
            "steps": 99,
            "screened": False,
            "candidates": args.count,
            "to memory s": reference_s,
            "to file s": float("nan"),
            "test acc mean %": float("nan"),
            "vs reference": 1.0,
            "vs raw write": float("nan"),
        }
    )
    report(
        "generation",
        f"Generate {args.count} {args.architecture} networks (CPU)",
        rows,
        {
            "count": args.count,
            "architecture": args.architecture,
            "raw_safetensors_write_s": raw_s,
            "result_megabytes": megabytes,
            "reference_velocity_parameters": reference_params,
            "shipped": {k: shipped[k] for k in ("sampler", "steps", "screened")},
        },
    )
    print(
        f"raw safetensors write of {megabytes:.1f} MB: {raw_s:.3f} s; "
        f"shipped setting to file: {shipped['to file s']:.3f} s ({shipped['to file s'] / raw_s:.2f}x raw); "
        f"reference velocity network: {reference_params / 1e6:.0f}M parameters, {reference_s:.1f} s"
    )


if __name__ == "__main__":
    main()

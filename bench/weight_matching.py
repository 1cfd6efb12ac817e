"""Weight matching (Git Re-Basin, TransFusion for ViT heads) between two independently
seeded random initializations of every registered architecture.

Wall time is the median over `--repeats` runs (one run for resnet18-cifar, 11M
parameters). Sweeps count the final sweep that changed nothing.

Run: python -m bench.weight_matching [--repeats 3] [--architectures mlp-fashion vit-fashion]
"""

import argparse
import functools

import torch

from bench.common import report, timed
from models.architectures import ARCHITECTURES
from models.canon import perm_sizes, run_weight_matching, spec_for

SINGLE_RUN = {"resnet18-cifar"}  # too large to repeat on a CPU


def weight_norm(state: dict[str, torch.Tensor]) -> float:
    """L2 norm over the tensors weight matching aligns (floating, ndim >= 1)."""
    return (
        sum(float(t.double().square().sum()) for t in state.values() if t.is_floating_point() and t.dim())
        ** 0.5
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--architectures", nargs="+", default=list(ARCHITECTURES), choices=list(ARCHITECTURES)
    )
    args = parser.parse_args()

    rows = []
    for name in args.architectures:
        arch = ARCHITECTURES[name]
        spec = spec_for(arch)
        states = []
        for seed in (0, 1):
            torch.manual_seed(seed)
            states.append(arch.build().state_dict())
        template, source = states
        parameters = sum(p.numel() for p in arch.build().parameters())
        # The objective is <template, source> over the matched tensors; as a cosine it reads 0..1.
        norms = weight_norm(template) * weight_norm(source)
        repeats = 1 if name in SINGLE_RUN else args.repeats
        seconds, result = timed(functools.partial(run_weight_matching, spec, template, source), repeats)
        rows.append(
            {
                "architecture": name,
                "parameters": parameters,
                "perms": len(perm_sizes(spec, template)),
                "head groups": len(spec.head_groups),
                "repeats": repeats,
                "sweeps": result.sweeps,
                "converged": result.converged,
                "seconds": seconds,
                "seconds/sweep": seconds / result.sweeps,
                "cosine before": result.initial_objective / norms,
                "cosine after": result.objective / norms,
            }
        )
        print(f"{name}: {result.sweeps} sweeps in {seconds:.2f} s", flush=True)
    report(
        "weight_matching",
        "Weight matching between two random initializations (median wall time)",
        rows,
        {"torch_threads": torch.get_num_threads()},
    )


if __name__ == "__main__":
    main()

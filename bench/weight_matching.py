"""Weight matching (Git Re-Basin, TransFusion for ViT heads) between two independently
seeded random initializations of every registered architecture, against a plain
Git Re-Basin (bench/reference_matching.py) on the same pair, same seed.

Ours and the reference run alternately; wall time is the median over `--repeats`
runs of each, on `--threads` torch threads (1 by default). The reference has no
head groups, so ViTs get no reference figures. Both final objectives are
re-evaluated here in float64, J = sum of <template, permuted source>; as a cosine
(J over the two weight norms) it reads 0..1. Sweeps count the final sweep that
changed nothing.

Run: python -m bench.weight_matching [--repeats 3] [--architectures mlp-fashion resnet18-cifar]
"""

import argparse
import functools
import time

import torch

from bench.common import report
from bench.reference_matching import reference_weight_matching
from models.architectures import ARCHITECTURES
from models.canon import (
    Permutations,
    apply_permutation,
    identity_permutation,
    perm_sizes,
    run_weight_matching,
    spec_for,
)


def matched(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The tensors J sums over (as models.canon.matching), in float64."""
    return {k: t.double() for k, t in state.items() if t.is_floating_point() and t.dim()}


def objective(spec, template: dict, source: dict, perms: Permutations) -> float:
    """J in float64 at `perms`."""
    aligned = matched(apply_permutation(spec, perms, source))
    return sum(float((t * aligned[k]).sum()) for k, t in matched(template).items())


def weight_norm(state: dict[str, torch.Tensor]) -> float:
    return sum(float(t.square().sum()) for t in matched(state).values()) ** 0.5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--architectures", nargs="+", default=list(ARCHITECTURES), choices=list(ARCHITECTURES)
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    rows = []
    for name in args.architectures:
        arch = ARCHITECTURES[name]
        spec = spec_for(arch)
        states = []
        for seed in (0, 1):
            torch.manual_seed(seed)
            states.append(arch.build().state_dict())
        template, source = states
        runs = {"ours": functools.partial(run_weight_matching, spec, template, source)}
        if not spec.head_groups:
            runs["reference"] = functools.partial(reference_weight_matching, spec, template, source)
        seconds: dict[str, list[float]] = {label: [] for label in runs}
        for _ in range(args.repeats):
            for label, run in runs.items():
                start = time.perf_counter()
                run()
                seconds[label].append(time.perf_counter() - start)
        median = {label: sorted(s)[len(s) // 2] for label, s in seconds.items()}
        ours = run_weight_matching(spec, template, source)
        norms = weight_norm(template) * weight_norm(source)
        row = {
            "architecture": name,
            "parameters": sum(p.numel() for p in arch.build().parameters()),
            "perms": len(perm_sizes(spec, template)),
            "head groups": len(spec.head_groups),
            "sweeps": ours.sweeps,
            "seconds": median["ours"],
            "reference seconds": None,
            "time / reference": None,
            "cosine before": objective(spec, template, source, identity_permutation(spec, template)) / norms,
            "cosine after": objective(spec, template, source, ours.permutations) / norms,
            "J - reference J": None,
            "same perms": None,
        }
        if "reference" in runs:
            reference, reference_sweeps = reference_weight_matching(spec, template, source)
            reference_objective = objective(spec, template, source, reference)
            row |= {
                "reference seconds": median["reference"],
                "time / reference": median["ours"] / median["reference"],
                "J - reference J": objective(spec, template, source, ours.permutations) - reference_objective,
                "same perms": all(torch.equal(ours.permutations[p], reference[p]) for p in reference)
                and ours.sweeps == reference_sweeps,
            }
        rows.append(row)
        print(f"{name}: {median}", flush=True)
    report(
        "weight_matching",
        "Weight matching between two random initializations, ours vs a plain Git Re-Basin (median wall time)",
        rows,
        {"torch_threads": torch.get_num_threads(), "repeats": args.repeats},
    )


if __name__ == "__main__":
    main()

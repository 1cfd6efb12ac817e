"""Canonicalizing a zoo: all members matched at once (`models.canon.canonicalize`, what
`dwf zoo canonicalize` runs) against one member at a time (`run_weight_matching` per
member, then the same permuting), onto the zoo's medoid, on `--threads` torch threads.

Without `--zoo`, the members are independently seeded random initializations
(no zoo is trained here): harder to match than trained members, which take fewer
sweeps. Both ways must give every member the same perms; the table says whether
they did. One run of each (they take seconds).

Run: python -m bench.zoo_canonicalization [--zoos mlp-fashion:100 resnet20-fashion:50] [--zoo DIR]
"""

import argparse
import time

import torch

from bench.common import report
from models.architectures import ARCHITECTURES, Architecture
from models.canon import apply_permutation, canonicalize, run_weight_matching, spec_for
from models.zoo.store import load_zoo
from models.zoo.templates import flat_parameters, medoid_index, member


def random_members(arch: Architecture, count: int) -> dict[str, torch.Tensor]:
    """(count, ...) stacked fresh initializations, seeds 1000, 1001, ..."""
    states = []
    for seed in range(1000, 1000 + count):
        torch.manual_seed(seed)
        states.append(arch.build().state_dict())
    return {k: torch.stack([s[k] for s in states]) for k in states[0]}


def one_at_a_time(
    spec, members: dict[str, torch.Tensor], template: dict[str, torch.Tensor]
) -> tuple[list, dict[str, torch.Tensor]]:
    """What canonicalization did before: match and permute each member alone; results and aligned."""
    results, aligned = [], []
    for k in range(next(iter(members.values())).shape[0]):
        source = {key: tensor[k] for key, tensor in members.items()}
        results.append(run_weight_matching(spec, template, source))
        aligned.append(apply_permutation(spec, results[-1].permutations, source))
    return results, {key: torch.stack([a[key] for a in aligned]) for key in members}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--zoos", nargs="+", default=["mlp-fashion:100", "resnet20-fashion:50"])
    parser.add_argument("--zoo", help="a trained zoo's directory, used instead of --zoos")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    if args.zoo:
        zoo = load_zoo(args.zoo)
        zoos = [(f"{zoo.architecture.name} (trained)", zoo.architecture, zoo.stacked)]
    else:
        zoos = []
        for entry in args.zoos:
            name, count = entry.split(":")
            zoos.append(
                (f"{name} (random)", ARCHITECTURES[name], random_members(ARCHITECTURES[name], int(count)))
            )
    rows = []
    for label, arch, members in zoos:
        spec = spec_for(arch)
        template = member(members, medoid_index(flat_parameters(arch, members)))
        start = time.perf_counter()
        alone, _ = one_at_a_time(spec, members, template)
        alone_seconds = time.perf_counter() - start
        start = time.perf_counter()
        batched = canonicalize(spec, members, template)
        batched_seconds = time.perf_counter() - start
        sweeps = torch.tensor([r.sweeps for r in alone], dtype=torch.float64)
        rows.append(
            {
                "zoo": label,
                "members": len(alone),
                "parameters": sum(p.numel() for p in arch.build().parameters()),
                "mean sweeps": float(sweeps.mean()),
                "max sweeps": int(sweeps.max()),
                "one at a time (s)": alone_seconds,
                "all at once (s)": batched_seconds,
                "speedup": alone_seconds / batched_seconds,
                "same perms": all(
                    torch.equal(a.permutations[p], b[p])
                    for a, b in zip(alone, batched.permutations, strict=True)
                    for p in b
                ),
            }
        )
        print(
            f"{label}: {alone_seconds:.2f} s one at a time, {batched_seconds:.2f} s all at once", flush=True
        )
    report(
        "zoo_canonicalization",
        "Canonicalizing a zoo onto its medoid: all members at once vs one at a time",
        rows,
        {"torch_threads": torch.get_num_threads()},
    )


if __name__ == "__main__":
    main()

"""Merge zoos built apart (other machines, other seed ranges, another day) into one zoo.

Zoos of one architecture, data set and recipe with disjoint seeds are parts of one larger zoo:
`merge_zoos` writes their members, in the order given, as a new complete zoo. A member's
training depends only on its seed (tests/models/test_zoo_train.py), so parts whose seed ranges
follow each other on chunk boundaries merge into the zoo one build of all the seeds gives. The
sources are verified as `load_zoo` verifies any zoo and left as they are; the merged zoo records
where its members came from (`environment["merged_from"]`).
"""

from collections.abc import Sequence
from pathlib import Path

import torch

from contract.files import replace_directory
from models.zoo.build import describe_seeds
from models.zoo.store import Zoo, ZooError, ZooManifest, load_zoo, write_complete_zoo

MUST_AGREE = ("architecture", "dataset", "recipe", "imported", "input")


def check_mergeable(zoos: Sequence[Zoo]) -> None:
    """Raise ZooError naming every reason `zoos` are not parts of one zoo."""
    if len(zoos) < 2:
        raise ZooError("merging needs at least two zoos")
    problems = [
        f"{zoo.path} is a canonical zoo: merge the zoos it was made from, then canonicalize the merged one"
        for zoo in zoos
        if zoo.manifest.canonical is not None
    ]
    first = zoos[0]
    for zoo in zoos[1:]:
        problems += [
            f"{name}: {first.path} has {getattr(first.manifest, name)!r}, "
            f"{zoo.path} has {getattr(zoo.manifest, name)!r}"
            for name in MUST_AGREE
            if getattr(zoo.manifest, name) != getattr(first.manifest, name)
        ]
    seen: dict[int, Path] = {}
    for zoo in zoos:
        shared = sorted(seed for seed in zoo.manifest.seeds if seed in seen)
        if shared:
            problems.append(
                f"{zoo.path} repeats {len(shared)} seeds of {seen[shared[0]]} (first {shared[:5]}): "
                "a seed gives the same member twice; build the parts with disjoint --first-seed ranges"
            )
        seen.update(dict.fromkeys(zoo.manifest.seeds, zoo.path))
    if problems:
        raise ZooError("cannot merge these zoos: " + "; ".join(problems))


def merge_zoos(sources: Sequence[str | Path], out: str | Path) -> ZooManifest:
    """Write the members of the zoos in `sources`, in that order, as one complete zoo at `out`.

    Chunks are `sources[0]`'s chunk size; the build time is the parts' sum. Raises ZooError
    (naming the problem and the fix) for a broken or canonical source, a different architecture,
    data set, recipe or input contract, repeated seeds, or a non-empty `out`.
    """
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise ZooError(f"{out} is not empty; choose another --out, or delete it to merge again")
    zoos = [load_zoo(source) for source in sources]
    check_mergeable(zoos)
    first = zoos[0].manifest
    manifest = ZooManifest(
        architecture=first.architecture,
        dataset=first.dataset,
        recipe=first.recipe,
        seeds=[seed for zoo in zoos for seed in zoo.manifest.seeds],
        chunk_size=first.chunk_size,
        members=[member for zoo in zoos for member in zoo.manifest.members],
        build_wall_time_s=sum(zoo.manifest.build_wall_time_s for zoo in zoos),
        environment={
            **first.environment,
            "merged_from": [
                {
                    "path": str(zoo.path),
                    "members": describe_seeds(zoo.manifest.seeds),
                    "content_hash": zoo.manifest.content_hash,
                }
                for zoo in zoos
            ],
        },
        imported=first.imported,
        input=first.input,
    )
    stacked = {key: torch.cat([zoo.stacked[key] for zoo in zoos]) for key in zoos[0].stacked}
    replace_directory(out, lambda staging: write_complete_zoo(staging, manifest, stacked))
    return manifest

"""Canonicalize a zoo: permute every member onto one template network."""

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch

from .matching import weight_matching
from .permute import Permutations, apply_permutation, perm_sizes
from .spec import PermutationSpec


@dataclass
class CanonicalizationResult:
    aligned: dict[str, torch.Tensor]  # stacked (K, ...) members, each permuted onto the template
    permutations: list[Permutations]  # one per member: aligned[k] = apply_permutation(perms[k], member k)


def canonicalize(
    spec: PermutationSpec,
    members: Mapping[str, torch.Tensor],
    template: Mapping[str, torch.Tensor],
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> CanonicalizationResult:
    """Weight-match each of the K stacked `members` (K, ...) to `template` (one state dict).

    Every member is matched independently with the same `seed`. `progress(done, K)`
    is called after each member.
    """
    if perm_sizes(spec, members, stacked=True) != perm_sizes(spec, template):
        raise ValueError("members and template have different widths; they are not one architecture")
    count = next(iter(members.values())).shape[0]
    aligned, permutations = [], []
    for k in range(count):
        member = {key: tensor[k] for key, tensor in members.items()}
        perms = weight_matching(spec, template, member, seed=seed)
        aligned.append(apply_permutation(spec, perms, member))
        permutations.append(perms)
        if progress is not None:
            progress(k + 1, count)
    stacked = {key: torch.stack([a[key] for a in aligned]) for key in members}
    return CanonicalizationResult(aligned=stacked, permutations=permutations)

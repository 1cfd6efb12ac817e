"""Canonicalize a zoo: permute every member onto one template network."""

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch

from .matching import match_stacked
from .permute import Permutations, apply_member_permutations, perm_sizes
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

    All members are matched at once (`match_stacked`); member k gets the perms
    that matching it alone with `seed` gives. `progress(done, K)` is called after
    every sweep with the members finished so far.
    """
    if perm_sizes(spec, members, stacked=True) != perm_sizes(spec, template):
        raise ValueError("members and template have different widths; they are not one architecture")
    permutations = [r.permutations for r in match_stacked(spec, template, members, seed, progress=progress)]
    aligned = apply_member_permutations(spec, permutations, members)
    return CanonicalizationResult(aligned=aligned, permutations=permutations)

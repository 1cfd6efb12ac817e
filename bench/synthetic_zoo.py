"""A synthetic zoo without training: permuted, perturbed copies of a few random networks.

Recipe (`SyntheticZooRecipe`): `bases` networks are drawn at random initialization
(`torch.manual_seed(seed + b)`, then `architecture.build()`). Member k is base
k % bases with (1) a uniformly random element of the architecture's permutation
group applied (`models.canon.random_permutation`, generator seeded by
seed * 1_000_003 + k) and (2) Gaussian noise added to every parameter tensor,
of std `noise` times that tensor's RMS in the base (a tensor that is zero in the
base, like a fresh BatchNorm bias, stays zero). Buffers (BatchNorm statistics)
are the base's, permuted. Every member therefore computes its base's function up
to the noise, and weight matching a member to its base recovers the inverse of
its permutation (tests/models/test_synthetic_zoo.py checks both).
"""

from dataclasses import dataclass

import torch

from models.architectures import Architecture
from models.canon import Permutations, apply_permutation, random_permutation, spec_for


@dataclass(frozen=True)
class SyntheticZooRecipe:
    bases: int = 4  # random-init networks the members are copies of
    noise: float = 0.01  # per-parameter-tensor noise std, relative to the tensor's RMS in the base
    seed: int = 0


class SyntheticZoo:
    """The recipe's bases of one architecture; `member(k)` draws member k (deterministic in k)."""

    def __init__(self, architecture: Architecture, recipe: SyntheticZooRecipe):
        self.recipe = recipe
        self.spec = spec_for(architecture)
        self.bases = []
        for b in range(recipe.bases):
            torch.manual_seed(recipe.seed + b)
            module = architecture.build()
            self.bases.append(module.state_dict())
        self.parameter_keys = [name for name, _ in module.named_parameters()]  # state-dict order

    def member(self, index: int) -> tuple[dict[str, torch.Tensor], Permutations]:
        """Member `index` (a state dict) and the permutation applied to its base (before the noise)."""
        base = self.bases[index % self.recipe.bases]
        generator = torch.Generator().manual_seed(self.recipe.seed * 1_000_003 + index)
        perms = random_permutation(self.spec, base, generator)
        member = apply_permutation(self.spec, perms, base)
        for key in self.parameter_keys:
            scale = self.recipe.noise * base[key].square().mean().sqrt()
            member[key] = member[key] + scale * torch.randn(member[key].shape, generator=generator)
        return member, perms

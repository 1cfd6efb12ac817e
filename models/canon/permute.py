"""Apply, draw and size permutations described by a PermutationSpec.

Convention: along an axis that carries perm P (an (n,) int64 index vector),
`out = x.index_select(axis, P)`, i.e. `out[i] = x[P[i]]`: unit i of the result
is unit P[i] of the input.

Head-structured perms (the two perms of a HeadGroup) are built from a head
permutation `heads` (H,) and within-head permutations `within` (H, head_dim):
`P[h * head_dim + j] = heads[h] * head_dim + within[h, j]`.
"""

from collections.abc import Mapping, Sequence

import torch

from .spec import PermutationSpec

Permutations = dict[str, torch.Tensor]  # perm name -> (n,) int64 indices
StateDict = Mapping[str, torch.Tensor]


def perm_sizes(spec: PermutationSpec, state_dict: StateDict, stacked: bool = False) -> dict[str, int]:
    """perm name -> n, read from the tensors; raises ValueError if the spec and the tensors disagree.

    Checks that every key is covered by the spec (and vice versa), that every axes
    tuple has one entry per tensor axis, that a perm has one size everywhere and
    that head-group sizes are multiples of their head count.
    `stacked=True`: every tensor carries a leading ensemble axis.
    """
    lead = 1 if stacked else 0
    if set(spec.axes) != set(state_dict):
        missing, extra = set(state_dict) - set(spec.axes), set(spec.axes) - set(state_dict)
        raise ValueError(
            f"spec does not match state dict: uncovered keys {sorted(missing)}, unknown keys {sorted(extra)}"
        )
    sizes: dict[str, int] = {}
    for key, axes in spec.axes.items():
        shape = state_dict[key].shape[lead:]
        if len(axes) != len(shape):
            raise ValueError(f"{key}: spec names {len(axes)} axes, tensor has shape {tuple(shape)}")
        for axis, perm in enumerate(axes):
            if perm is None:
                continue
            if sizes.setdefault(perm, shape[axis]) != shape[axis]:
                raise ValueError(
                    f"perm {perm!r} has size {sizes[perm]} elsewhere but {key} axis {axis} "
                    f"has size {shape[axis]}"
                )
    for group in spec.head_groups:
        for perm in (group.qk, group.vo):
            if sizes[perm] % group.num_heads:
                raise ValueError(
                    f"perm {perm!r} of size {sizes[perm]} is not split into {group.num_heads} equal heads"
                )
    return sizes


def apply_permutation(
    spec: PermutationSpec, perms: Mapping[str, torch.Tensor], state_dict: StateDict, stacked: bool = False
) -> dict[str, torch.Tensor]:
    """Permute every tensor of `state_dict` along the axes its spec entry names.

    `stacked=True`: every tensor has a leading ensemble axis (K, ...) and the
    same perms apply to all K members. Returns new tensors in the input's key order.
    """
    lead = 1 if stacked else 0
    out = {}
    for key, tensor in state_dict.items():
        if key not in spec.axes:
            raise KeyError(f"{key!r} is not covered by the permutation spec")
        for axis, perm in enumerate(spec.axes[key]):
            if perm is not None:
                tensor = tensor.index_select(axis + lead, perms[perm].to(tensor.device))
        out[key] = tensor
    return out


def apply_member_permutations(
    spec: PermutationSpec, perms: Sequence[Mapping[str, torch.Tensor]], stacked: StateDict
) -> dict[str, torch.Tensor]:
    """Permute each member of `stacked` (K, ...) by its own perms: member k of the result is
    `apply_permutation(spec, perms[k], member k)`. One gather per (key, axis) for all K."""
    out = {}
    for key, tensor in stacked.items():
        for axis, perm in enumerate(spec.axes[key]):
            if perm is not None:
                index = torch.stack([p[perm] for p in perms]).to(tensor.device)  # (K, n)
                shape = [len(perms)] + [1] * (tensor.dim() - 1)
                shape[axis + 1] = index.shape[1]
                tensor = tensor.gather(axis + 1, index.view(shape).expand_as(tensor))
        out[key] = tensor
    return out


def compose_head_permutation(heads: torch.Tensor, within: torch.Tensor) -> torch.Tensor:
    """heads (H,) and within (H, head_dim) -> the full (H * head_dim,) perm (see module docstring)."""
    head_dim = within.shape[1]
    return (heads[:, None] * head_dim + within).reshape(-1)


def head_assignment(perm: torch.Tensor, num_heads: int) -> torch.Tensor:
    """The head permutation (H,) of a head-structured perm (n,): which source head each head reads."""
    head_dim = len(perm) // num_heads
    return perm.view(num_heads, head_dim)[:, 0] // head_dim


def random_permutation(
    spec: PermutationSpec, state_dict: StateDict, generator: torch.Generator
) -> Permutations:
    """A uniformly random element of the spec's symmetry group.

    Plain perms are uniform over all n! orders; each head group gets one head
    permutation shared by its qk and vo perms and independent within-head orders.
    """
    sizes = perm_sizes(spec, state_dict)
    perms = {
        name: torch.randperm(n, generator=generator)
        for name, n in sizes.items()
        if name not in spec.head_group_of
    }
    for group in spec.head_groups:
        heads = torch.randperm(group.num_heads, generator=generator)
        for name in (group.qk, group.vo):
            head_dim = sizes[name] // group.num_heads
            within = torch.stack([torch.randperm(head_dim, generator=generator) for _ in heads])
            perms[name] = compose_head_permutation(heads, within)
    return {name: perms[name] for name in sizes}


def identity_permutation(spec: PermutationSpec, state_dict: StateDict) -> Permutations:
    """arange(n) for every perm of the spec."""
    return {name: torch.arange(n) for name, n in perm_sizes(spec, state_dict).items()}

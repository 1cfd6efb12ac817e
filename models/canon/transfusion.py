"""TransFusion: align the attention heads of one block in two stages.

1. Inter-head. Each head gets a descriptor that does not depend on how its
   dimensions or the residual stream are ordered: the singular values of its
   W_q, W_k, W_v blocks (head_dim x dim) and of its W_o block (dim x head_dim),
   concatenated. Heads are paired by a linear assignment minimizing the squared
   descriptor distance.
2. Intra-head. For each paired (template head a, source head b), the head's
   dimensions are matched by a linear assignment on the (head_dim x head_dim)
   block of the weight-matching cost matrix: once for the qk dims (q and k rows
   and biases) and once, separately, for the vo dims (v rows and bias, o columns).

The functions here are pure: `models.canon.matching` supplies the cost matrices
(with the current residual perm already applied) and decides whether to accept.
"""

from collections.abc import Mapping

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from .permute import compose_head_permutation
from .spec import HeadGroup, PermutationSpec


def head_descriptors(
    spec: PermutationSpec, group: HeadGroup, tensors: Mapping[str, torch.Tensor]
) -> torch.Tensor:
    """Permutation-invariant descriptor of every head of `group`: (H, D).

    For each matrix (ndim >= 2) that carries the group's qk or vo perm, the head's
    (head_dim, rest) block along that axis contributes its head_dim singular values
    (for the o projection the block is W_o's head columns, transposed; singular
    values are unchanged). Biases are left out. Only `tensors`' keys are used.
    """
    parts = []
    for perm in (group.qk, group.vo):
        for key, axis in spec.perm_to_axes[perm]:
            if key not in tensors or tensors[key].dim() < 2:
                continue
            blocks = head_blocks(tensors[key], axis, group.num_heads)  # (H, head_dim, rest)
            parts.append(torch.linalg.svdvals(blocks))  # (H, head_dim)
    return torch.cat(parts, dim=1)


def head_blocks(tensor: torch.Tensor, axis: int, num_heads: int) -> torch.Tensor:
    """(..., n at `axis`, ...) -> (H, head_dim, rest): each head's slice along `axis`, flattened."""
    moved = tensor.movedim(axis, 0)
    return moved.reshape(num_heads, moved.shape[0] // num_heads, -1)


def match_heads(template_descriptors: torch.Tensor, source_descriptors: torch.Tensor) -> torch.Tensor:
    """(H, D), (H, D) -> head perm (H,) int64: template head a is paired with source head perm[a].

    Minimizes the total squared descriptor distance.
    """
    cost = torch.cdist(template_descriptors, source_descriptors).square()
    _, cols = linear_sum_assignment(cost.cpu().numpy())
    return torch.as_tensor(cols, dtype=torch.int64)


def match_within_heads(cost: np.ndarray, heads: torch.Tensor) -> torch.Tensor:
    """Head-structured perm (n,) maximizing `sum_i cost[i, perm[i]]` with the head pairing fixed.

    cost (n, n): cost[i, j] = <template unit i, source unit j>; heads (H,): template
    head a reads source head heads[a]. One assignment per head over its head_dim units.
    Returns a CPU int64 tensor.
    """
    num_heads = len(heads)
    head_dim = cost.shape[0] // num_heads
    blocks = cost.reshape(num_heads, head_dim, num_heads, head_dim)
    within = torch.stack(
        [
            torch.as_tensor(linear_sum_assignment(blocks[a, :, int(b), :], maximize=True)[1])
            for a, b in enumerate(heads)
        ]
    )
    return compose_head_permutation(heads.cpu(), within)

"""A plain Git Re-Basin weight matching to time ours against (bench/weight_matching.py).

Written from the algorithm's description (Ainsworth et al. 2023, weight matching):
start from identity perms; each sweep visits the perms in a random order, and for
perm P sums, over every (tensor, axis) carrying P, template_axis @ source_axis^T
with the source's other axes permuted by the current perms (each reshaped to
(n, -1)); a linear assignment maximizes that (n, n) cost, and the new P is kept if
it raises sum_i cost[i, P[i]] by more than 1e-12. It stops after a sweep in which
no perm changed. Everything in float32, every permuted source re-made at every
step. Same tensors as ours (floating, ndim >= 1) and the same visiting order for
a seed; no head groups (TransFusion), so only for specs without them.
"""

from collections.abc import Mapping

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from models.canon import Permutations, PermutationSpec, perm_sizes


def reference_weight_matching(
    spec: PermutationSpec,
    template: Mapping[str, torch.Tensor],
    source: Mapping[str, torch.Tensor],
    seed: int = 0,
    max_sweeps: int = 100,
) -> tuple[Permutations, int]:
    """Perms aligning `source` to `template`, and the sweeps run (the last changed nothing)."""
    if spec.head_groups:
        raise ValueError("the reference matches plain perms only")
    keys = [k for k, t in template.items() if t.is_floating_point() and t.dim() >= 1]
    a = {k: template[k].float() for k in keys}
    b = {k: source[k].float() for k in keys}
    sizes = perm_sizes(spec, template)
    perms = {name: torch.arange(n) for name, n in sizes.items()}
    names = list(sizes)
    rng = np.random.default_rng(seed)
    for sweep in range(1, max_sweeps + 1):
        progress = False
        for index in rng.permutation(len(names)):
            name, n = names[index], sizes[names[index]]
            cost = torch.zeros(n, n)
            for key, axis in spec.perm_to_axes[name]:
                if key not in a:
                    continue
                w_b = b[key]
                for other_axis, other in enumerate(spec.axes[key]):
                    if other is not None and other_axis != axis:
                        w_b = w_b.index_select(other_axis, perms[other])
                cost += a[key].movedim(axis, 0).reshape(n, -1) @ w_b.movedim(axis, 0).reshape(n, -1).T
            _, cols = linear_sum_assignment(cost.numpy(), maximize=True)
            candidate = torch.from_numpy(cols)
            rows = torch.arange(n)
            if cost[rows, candidate].sum() > cost[rows, perms[name]].sum() + 1e-12:
                perms[name] = candidate
                progress = True
        if not progress:
            return perms, sweep
    return perms, max_sweeps

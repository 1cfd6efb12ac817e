"""Git Re-Basin weight matching (Ainsworth et al. 2023), with TransFusion for attention heads.

Find perms maximizing the alignment objective

    J(perms) = sum over floating tensors (ndim >= 1) of <template, permuted source>

(parameters and BatchNorm running statistics; `num_batches_tracked` is skipped)
by coordinate descent. The units are the plain perms and the head groups (both
perms of a group move together). Every sweep visits all units in an order drawn
from `seed`. For a plain perm P, with every other perm held fixed, J is linear
in P: J = sum_i C[i, P[i]] + const, where the (n, n) cost

    C = sum over (key, axis) carrying P of  T_axis @ S_axis^T

takes the template T and the source S (its other axes already permuted) along
that axis, each reshaped to (n, -1). A linear assignment maximizes it. A head
group is solved by TransFusion (`models.canon.transfusion`). A unit's new perm is
kept only if it raises the unit's share of J by more than 1e-12 relative, so J
never decreases; the descent stops after a sweep in which no unit changed.

The same perm may not appear twice on one tensor (J would not be linear in it);
no registered architecture does that.

Everything is computed in float64 on the tensors' device; perms come back as
CPU int64 tensors.
"""

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from .permute import Permutations, head_assignment, identity_permutation, perm_sizes
from .spec import HeadGroup, PermutationSpec
from .transfusion import head_descriptors, match_heads, match_within_heads

RELATIVE_TOLERANCE = 1e-12


@dataclass
class MatchingResult:
    permutations: Permutations  # perm name -> (n,) int64: apply to the source to align it to the template
    sweeps: int  # sweeps run, including the final one that changed nothing (if converged)
    converged: bool  # False if max_sweeps ran out while units were still improving
    initial_objective: float  # J at the identity perms
    objective: float  # J at the returned perms


class _Problem:
    """Template and source as float64 tensors, and the cost matrices they induce."""

    def __init__(
        self, spec: PermutationSpec, template: Mapping[str, torch.Tensor], source: Mapping[str, torch.Tensor]
    ):
        sizes = perm_sizes(spec, template)  # validates coverage and shapes
        if perm_sizes(spec, source) != sizes:
            raise ValueError("template and source have different widths; they are not one architecture")
        self.spec = spec
        keys = [k for k, t in template.items() if t.is_floating_point() and t.dim() >= 1]
        self.template = {k: template[k].detach().to(torch.float64) for k in keys}
        self.source = {k: source[k].detach().to(self.template[k].device, torch.float64) for k in keys}
        self._template_rows: dict[str, torch.Tensor] = {}  # perm name -> (n, total) carriers of the template
        for key in keys:
            named = [p for p in spec.axes[key] if p is not None]
            if len(named) != len(set(named)):
                raise ValueError(
                    f"{key}: a perm appears on two axes of one tensor; weight matching needs "
                    "each perm at most once per tensor"
                )

    def cost(self, perms: Permutations, name: str) -> torch.Tensor:
        """(n, n) float64: cost[i, j] = alignment of template unit i with source unit j under `perms`."""
        n = len(perms[name])
        carriers = [(key, axis) for key, axis in self.spec.perm_to_axes[name] if key in self.template]
        if not carriers:  # a perm carried only by skipped (integer or scalar) tensors
            return torch.zeros(n, n, dtype=torch.float64, device=perms[name].device)
        if name not in self._template_rows:  # the template never moves: concatenate it once
            self._template_rows[name] = torch.cat(
                [self.template[key].movedim(axis, 0).reshape(n, -1) for key, axis in carriers], dim=1
            )
        source_rows = []  # every tensor carrying `name`, other axes permuted, as (n, -1) along its axis
        for key, axis in carriers:
            source = self.source[key]
            for other_axis, other in enumerate(self.spec.axes[key]):
                if other is not None and other_axis != axis:
                    source = source.index_select(other_axis, perms[other])
            source_rows.append(source.movedim(axis, 0).reshape(n, -1))
        return self._template_rows[name] @ torch.cat(source_rows, dim=1).T

    def objective(self, perms: Permutations) -> float:
        """J: sum over matched tensors of <template, permuted source>."""
        total = 0.0
        for key, source in self.source.items():
            for axis, perm in enumerate(self.spec.axes[key]):
                if perm is not None:
                    source = source.index_select(axis, perms[perm])
            total += float((self.template[key] * source).sum())
        return total


def assignment_value(cost: torch.Tensor, perm: torch.Tensor) -> float:
    """sum_i cost[i, perm[i]]."""
    return float(cost.gather(1, perm[:, None]).sum())


def improves(old: float, new: float) -> bool:
    return new - old > RELATIVE_TOLERANCE * abs(old)


def _plain_step(problem: _Problem, perms: Permutations, name: str) -> bool:
    """Re-solve one plain perm; update `perms` and return True if it improved."""
    cost = problem.cost(perms, name)
    _, cols = linear_sum_assignment(cost.cpu().numpy(), maximize=True)
    candidate = torch.as_tensor(cols, dtype=torch.int64, device=cost.device)
    if improves(assignment_value(cost, perms[name]), assignment_value(cost, candidate)):
        perms[name] = candidate
        return True
    return False


def _head_group_step(
    problem: _Problem, perms: Permutations, group: HeadGroup, spectral_heads: torch.Tensor
) -> bool:
    """Re-solve one head group with TransFusion; update `perms` and return True if it improved.

    Two head pairings are tried: the spectral one (fixed for the whole descent,
    since descriptors ignore every permutation) and the group's current one; each
    gets its optimal within-head perms, and the better one competes with the
    current perms.
    """
    cost_qk, cost_vo = problem.cost(perms, group.qk), problem.cost(perms, group.vo)
    current_value = assignment_value(cost_qk, perms[group.qk]) + assignment_value(cost_vo, perms[group.vo])
    pairings = [spectral_heads.to(cost_qk.device)]
    current_heads = head_assignment(perms[group.qk], group.num_heads)
    if not torch.equal(current_heads, pairings[0]):
        pairings.append(current_heads)
    best = None
    for heads in pairings:
        qk, vo = match_within_heads(cost_qk, heads), match_within_heads(cost_vo, heads)
        value = assignment_value(cost_qk, qk) + assignment_value(cost_vo, vo)
        if best is None or value > best[0]:
            best = (value, qk, vo)
    value, qk, vo = best
    if improves(current_value, value):
        perms[group.qk], perms[group.vo] = qk, vo
        return True
    return False


def run_weight_matching(
    spec: PermutationSpec,
    template: Mapping[str, torch.Tensor],
    source: Mapping[str, torch.Tensor],
    seed: int = 0,
    max_sweeps: int = 100,
) -> MatchingResult:
    """Weight matching with convergence details; see the module docstring."""
    problem = _Problem(spec, template, source)
    device = next(iter(problem.template.values())).device
    perms = {name: p.to(device) for name, p in identity_permutation(spec, template).items()}
    spectral = {
        group: match_heads(
            head_descriptors(spec, group, problem.template), head_descriptors(spec, group, problem.source)
        )
        for group in spec.head_groups
    }
    units: list[str | HeadGroup] = [n for n in perms if n not in spec.head_group_of] + list(spec.head_groups)
    rng = np.random.default_rng(seed)
    initial = problem.objective(perms)
    sweeps, converged = 0, False
    while sweeps < max_sweeps and not converged:
        sweeps += 1
        changed = False
        for index in rng.permutation(len(units)):
            unit = units[index]
            if isinstance(unit, HeadGroup):
                changed |= _head_group_step(problem, perms, unit, spectral[unit])
            else:
                changed |= _plain_step(problem, perms, unit)
        converged = not changed
    return MatchingResult(
        permutations={name: p.cpu() for name, p in perms.items()},
        sweeps=sweeps,
        converged=converged,
        initial_objective=initial,
        objective=problem.objective(perms),
    )


def weight_matching(
    spec: PermutationSpec,
    template: Mapping[str, torch.Tensor],
    source: Mapping[str, torch.Tensor],
    seed: int = 0,
    max_sweeps: int = 100,
) -> Permutations:
    """Perms such that `apply_permutation(spec, perms, source)` is aligned to `template`.

    template, source: state dicts of one architecture (unstacked). `seed` fixes
    the order units are visited in; the result is deterministic given it.
    """
    return run_weight_matching(spec, template, source, seed, max_sweeps).permutations

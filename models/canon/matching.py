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

Each term of C (one (key, axis) carrying P) depends only on the tensor's other
perm, if it has one (a tensor may carry at most two perms, each once; every
registered architecture does). Terms are computed in float32 and cached: a
tensor carrying only P adds a constant term, computed once; any other term is
recomputed only when the tensor's other perm has changed, from a copy of the
source laid out so that permuting it is a gather of rows. A unit none of whose
terms changed since it was last solved is not solved again (the same cost gives
the same answer). J is the initial J plus every accepted step's gain, no extra
pass. None of this changes a decision: the descent is the plain algorithm's, at
float32 precision (J too is float32-accurate).

`match_stacked` runs K sources against one template at once (zoo
canonicalization): each step recomputes the stale terms of all K members with
one batched matmul and solves their assignments one by one. Member k ends with
what `run_weight_matching` gives for it alone: every operation is per member,
and the visiting order depends only on the seed.

Everything runs on the template's device; perms come back as CPU int64 tensors.
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from .permute import Permutations, head_assignment, perm_sizes
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


def _layout(stacked: torch.Tensor, axis: int, lead: list[int]) -> torch.Tensor:
    """(K, ...) -> (K, m, n): the unstacked axes `lead`, then the others, flattened into rows; `axis` last."""
    rest = [d for d in range(stacked.dim() - 1) if d != axis and d not in lead]
    moved = stacked.permute(0, *(d + 1 for d in lead + rest), axis + 1)
    return moved.reshape(stacked.shape[0], -1, stacked.shape[axis + 1])


def _rows(template: torch.Tensor, axis: int, lead: list[int]) -> torch.Tensor:
    """(...) -> (n, m): `axis` first, then the axes `lead`, then the others, flattened into columns."""
    rest = [d for d in range(template.dim()) if d != axis and d not in lead]
    return template.permute(axis, *lead, *rest).reshape(template.shape[axis], -1)


def _product(template: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
    """(n, m) template rows, (k, m, n) source columns -> (k, n, n) cost terms."""
    return torch.bmm(template.expand(columns.shape[0], *template.shape), columns)


def _dot(template: torch.Tensor, sources: torch.Tensor) -> np.ndarray:
    """(...), (K, ...) -> (K,) float64: <template, source k>."""
    return (sources.flatten(1) @ template.flatten()).double().cpu().numpy()


class _Carrier:
    """A perm on one axis of a tensor that carries a second perm, `other`: its cached cost term.

    The source is kept as (K * n_other, m_rest * n) rows, one per unit of `other`,
    so permuting `other` for member k is a gather of rows.
    """

    def __init__(
        self, axis: int, other: str, other_axis: int, template: torch.Tensor, sources: torch.Tensor
    ) -> None:
        self.other = other
        count, n_other = sources.shape[0], sources.shape[other_axis + 1]
        self.template = _rows(template, axis, [other_axis])  # (n, m)
        self.rows = _layout(sources, axis, [other_axis]).reshape(count * n_other, -1)
        self.offsets = torch.arange(count, device=template.device)[:, None] * n_other  # (K, 1)
        n = template.shape[axis]
        self.term = torch.empty(count, n, n, device=template.device)  # (K, n, n)
        self.computed_at = np.full(count, -1)  # the step each member's term was computed at

    def refresh(
        self, perms: Permutations, changed_at: dict[str, np.ndarray], due: np.ndarray, step: int
    ) -> np.ndarray:
        """Recompute the term of the `due` members (K,) bool whose `other` has moved; return those (K,)."""
        stale = due & (self.computed_at < changed_at[self.other])
        if not stale.any():
            return stale
        members = _index(stale, self.rows.device)
        rows = self.rows.index_select(0, (self.offsets[members] + perms[self.other][members]).flatten())
        self.term[members] = _product(
            self.template, rows.view(-1, self.template.shape[1], len(self.template))
        )
        self.computed_at[stale] = step
        return stale


class _Problem:
    """Template and K stacked sources in float32, and the cost matrices they induce.

    The tensors carrying exactly one perm add a constant term to its cost, computed
    once (`fixed_terms`); a tensor carrying two gives each of its perms a `_Carrier`.
    """

    def __init__(
        self, spec: PermutationSpec, template: Mapping[str, torch.Tensor], sources: Mapping[str, torch.Tensor]
    ):
        self.sizes = perm_sizes(spec, template)  # validates coverage and shapes
        if perm_sizes(spec, sources, stacked=True) != self.sizes:
            raise ValueError("template and source have different widths; they are not one architecture")
        keys = [k for k, t in template.items() if t.is_floating_point() and t.dim() >= 1]
        self.device = template[keys[0]].device
        self.count = sources[keys[0]].shape[0]
        self.template = {k: template[k].detach().to(torch.float32) for k in keys}
        self.sources = {k: sources[k].detach().to(self.device, torch.float32) for k in keys}
        self.carriers: dict[str, list[_Carrier]] = {name: [] for name in self.sizes}
        self.initial_objective = np.zeros(self.count)  # (K,) J at the identity perms
        single: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {name: [] for name in self.sizes}
        for key in keys:
            template_key, sources_key = self.template[key], self.sources[key]
            named = [(axis, p) for axis, p in enumerate(spec.axes[key]) if p is not None]
            if len(named) > 2 or len({p for _, p in named}) != len(named):
                raise ValueError(
                    f"{key}: weight matching needs each tensor to carry at most two perms, each on one axis"
                )
            if len(named) == 1:
                [(axis, name)] = named
                single[name].append((_rows(template_key, axis, []), _layout(sources_key, axis, [])))
                continue
            self.initial_objective += _dot(template_key, sources_key)
            for (axis, name), (other_axis, other) in zip(named, named[::-1], strict=True):
                self.carriers[name].append(_Carrier(axis, other, other_axis, template_key, sources_key))
        self.fixed_terms = {}  # perm name -> (K, n, n)
        for name, n in self.sizes.items():
            if not single[name]:
                self.fixed_terms[name] = torch.zeros(self.count, n, n, device=self.device)
                continue
            rows = torch.cat([t for t, _ in single[name]], dim=1)  # (n, m)
            self.fixed_terms[name] = _product(rows, torch.cat([s for _, s in single[name]], dim=1))
            trace = self.fixed_terms[name].diagonal(dim1=1, dim2=2).sum(1, dtype=torch.float64)
            self.initial_objective += trace.cpu().numpy()

    def cost(self, name: str, members: slice | torch.Tensor) -> torch.Tensor:
        """(k, n, n) float32: cost[j, i, u] = alignment of template unit i with source members[j]'s unit u."""
        total = self.fixed_terms[name][members].clone()
        for carrier in self.carriers[name]:
            total += carrier.term[members]
        return total


def _index(mask: np.ndarray, device: torch.device) -> slice | torch.Tensor:
    """The members a (K,) bool mask selects, as an index: every member is `slice(None)`, a view."""
    return slice(None) if mask.all() else torch.as_tensor(np.flatnonzero(mask), device=device)


def value(cost: np.ndarray, perm: np.ndarray) -> float:
    """sum_i cost[i, perm[i]], summed in float64."""
    return float(cost[np.arange(len(perm)), perm].sum(dtype=np.float64))


def improves(old: float, new: float) -> bool:
    return new - old > RELATIVE_TOLERANCE * abs(old)


def _plain_step(
    problem: _Problem, perms: Permutations, name: str, members: slice | torch.Tensor
) -> np.ndarray:
    """Re-solve perm `name` for `members` (k of them); update `perms` and return the gain in J (k,),
    0 where the perm stays."""
    current = perms[name][members].cpu().numpy()  # (k, n)
    updated, gains = current.copy(), np.zeros(len(current))
    for j, cost in enumerate(problem.cost(name, members).cpu().numpy()):
        candidate = linear_sum_assignment(cost, maximize=True)[1]
        old, new = value(cost, current[j]), value(cost, candidate)
        if improves(old, new):
            updated[j], gains[j] = candidate, new - old
    if gains.any():
        perms[name][members] = torch.from_numpy(updated).to(perms[name].device)
    return gains


def _head_group_step(
    problem: _Problem,
    perms: Permutations,
    group: HeadGroup,
    members: slice | torch.Tensor,
    spectral: torch.Tensor,
    indices: np.ndarray,
) -> np.ndarray:
    """Re-solve one head group with TransFusion for `members` (k of them, `indices` (k,)); update
    `perms` and return the gain in J (k,), 0 where the group stays.

    Two head pairings are tried per member: the spectral one (`spectral` (K, H),
    fixed for the whole descent, since descriptors ignore every permutation) and
    the group's current one; each gets its optimal within-head perms, and the
    better one competes with the current perms.
    """
    cost_qk = problem.cost(group.qk, members).cpu().numpy()
    cost_vo = problem.cost(group.vo, members).cpu().numpy()
    gains = np.zeros(len(indices))
    for j, k in enumerate(indices.tolist()):
        current = perms[group.qk][k].cpu(), perms[group.vo][k].cpu()
        current_value = value(cost_qk[j], current[0].numpy()) + value(cost_vo[j], current[1].numpy())
        pairings = [spectral[k]]
        current_heads = head_assignment(current[0], group.num_heads)
        if not torch.equal(current_heads, pairings[0]):
            pairings.append(current_heads)
        best = None
        for heads in pairings:
            qk, vo = match_within_heads(cost_qk[j], heads), match_within_heads(cost_vo[j], heads)
            total = value(cost_qk[j], qk.numpy()) + value(cost_vo[j], vo.numpy())
            if best is None or total > best[0]:
                best = (total, qk, vo)
        total, qk, vo = best
        if improves(current_value, total):
            perms[group.qk][k], perms[group.vo][k] = qk, vo
            gains[j] = total - current_value
    return gains


def match_stacked(
    spec: PermutationSpec,
    template: Mapping[str, torch.Tensor],
    sources: Mapping[str, torch.Tensor],
    seed: int = 0,
    max_sweeps: int = 100,
    progress: Callable[[int, int], None] | None = None,
) -> list[MatchingResult]:
    """Weight matching of each of the K stacked `sources` (K, ...) to `template`, all at once.

    Result k is what `run_weight_matching(spec, template, source k, seed)` returns.
    `progress(done, K)` is called after every sweep with the members finished so far.
    """
    problem = _Problem(spec, template, sources)
    count, device = problem.count, problem.device
    perms = {name: torch.arange(n, device=device).repeat(count, 1) for name, n in problem.sizes.items()}
    changed_at = {name: np.zeros(count, dtype=np.int64) for name in perms}  # step of each member's last move
    spectral = {
        group: torch.stack(
            [
                match_heads(
                    head_descriptors(spec, group, problem.template),
                    head_descriptors(spec, group, {k: v[m] for k, v in problem.sources.items()}),
                )
                for m in range(count)
            ]
        )
        for group in spec.head_groups
    }
    units: list[str | HeadGroup] = [n for n in perms if n not in spec.head_group_of] + list(spec.head_groups)
    solved = {unit: np.zeros(count, dtype=bool) for unit in units}
    rng = np.random.default_rng(seed)
    active, converged = np.full(count, max_sweeps > 0), np.zeros(count, dtype=bool)
    sweeps = np.zeros(count, dtype=np.int64)
    objective = problem.initial_objective.copy()  # (K,) J, moved by every accepted step's gain
    step = 0
    while active.any():
        sweeps += active
        changed = np.zeros(count, dtype=bool)
        for index in rng.permutation(len(units)):
            step += 1
            unit = units[index]
            names = (unit.qk, unit.vo) if isinstance(unit, HeadGroup) else (unit,)
            due = active & ~solved[unit]
            for name in names:
                for carrier in problem.carriers[name]:
                    due |= carrier.refresh(perms, changed_at, active, step)
            solved[unit] |= active
            if not due.any():  # every cost is the one this unit was last solved with
                continue
            members, indices = _index(due, device), np.flatnonzero(due)
            if isinstance(unit, HeadGroup):
                gains = _head_group_step(problem, perms, unit, members, spectral[unit], indices)
            else:
                gains = _plain_step(problem, perms, unit, members)
            objective[indices] += gains
            moved = indices[gains > 0]
            changed[moved] = True
            for name in names:
                changed_at[name][moved] = step
        converged |= active & ~changed
        active &= changed & (sweeps < max_sweeps)
        if progress is not None:
            progress(int((~active).sum()), count)
    return [
        MatchingResult(
            permutations={name: p[k].cpu() for name, p in perms.items()},
            sweeps=int(sweeps[k]),
            converged=bool(converged[k]),
            initial_objective=float(problem.initial_objective[k]),
            objective=float(objective[k]),
        )
        for k in range(count)
    ]


def run_weight_matching(
    spec: PermutationSpec,
    template: Mapping[str, torch.Tensor],
    source: Mapping[str, torch.Tensor],
    seed: int = 0,
    max_sweeps: int = 100,
) -> MatchingResult:
    """Weight matching with convergence details; see the module docstring."""
    return match_stacked(spec, template, {k: v[None] for k, v in source.items()}, seed, max_sweeps)[0]


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

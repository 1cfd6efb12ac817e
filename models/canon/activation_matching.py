"""Activation matching: align hidden units by what they compute, not by their weights.

Git Re-Basin's weight matching (models.canon.matching) pairs units whose weight vectors are
close. Activation matching (Ainsworth et al., "Git Re-Basin", ICLR 2023, section 3.1; also
Entezari et al. 2022, Jordan et al., "REPAIR", ICLR 2023) pairs units whose activations on
the same inputs are most correlated. A hidden unit's activation is a function of the input
alone, whatever the permutations of earlier layers, so every layer is matched on its own:
one linear assignment per hidden layer and member.

Joint alignment of a whole zoo (`activation_align`): every member is matched to an
*activation template*, the mean of the already-aligned members' standardized activations,
which is re-estimated after each round (round 1 matches to the medoid member by activation,
i.e. the member whose activations are closest to everybody's). A common template makes the
alignment cycle-consistent by construction: members i and j are matched through it.

Similarity of unit a (template) and b (member): the correlation of their pre-activations
plus that of their post-activations over the inputs. The pre-activation term separates
units that are dead on every input (their post-activations are constant), so a permuted
copy of a network is matched back exactly.

Supported: `models.architectures.mlp.MLP` (perm `P_i` on the units of hidden layer i,
models.canon.spec.mlp_spec). Other families keep weight matching.
"""

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from scipy.optimize import linear_sum_assignment

from models.architectures import Architecture
from models.architectures.mlp import ACTIVATIONS, MLP

from .architecture_spec import spec_for
from .permute import Permutations, apply_member_permutations

EPS = 1e-8
MEDOID_INPUTS = 256  # inputs whose activations choose the round-1 template member


@dataclass
class ActivationAlignment:
    aligned: dict[str, torch.Tensor]  # stacked (K, ...) members permuted onto the template
    permutations: list[Permutations]  # aligned member k = apply_permutation(spec, perms[k], member k)
    template: dict[str, torch.Tensor]  # the mean of the aligned members' parameters
    rounds: int  # alignment rounds run
    changed: list[int]  # members whose permutations changed, per round from round 2


def hidden_activations(
    architecture: Architecture, stacked: Mapping[str, torch.Tensor], images: torch.Tensor
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(pre-activation, post-activation), each (K, N, width), of every hidden layer of K stacked MLPs."""
    module = architecture.build()
    if not isinstance(module, MLP):
        raise TypeError(f"activation matching supports MLPs only, not {type(module).__name__}")
    act = ACTIVATIONS[module.config.activation]()
    hidden = len(module.config.hidden)
    x = images.flatten(1).float()  # (N, in)
    k = next(iter(stacked.values())).shape[0]
    h = x.expand(k, *x.shape)  # (K, N, in)
    out = []
    with torch.no_grad():
        for i in range(hidden):
            weight, bias = stacked[f"layers.{i}.weight"].float(), stacked[f"layers.{i}.bias"].float()
            pre = torch.baddbmm(bias[:, None, :], h, weight.transpose(1, 2))  # (K, N, width)
            h = act(pre)
            out.append((pre, h))
    return out


def standardize(features: torch.Tensor) -> torch.Tensor:
    """Each unit (last axis) to mean 0 and unit norm over the inputs (axis -2): dot products of
    standardized units are correlations; a constant unit becomes all zeros."""
    centered = features - features.mean(-2, keepdim=True)
    return centered / centered.norm(dim=-2, keepdim=True).clamp_min(EPS)


def match_layer(
    template: tuple[torch.Tensor, torch.Tensor], member: tuple[torch.Tensor, torch.Tensor]
) -> torch.Tensor:
    """Permutation (width,) with perm[i] = the member unit matched to template unit i, maximizing the
    summed correlation; `template` and `member` are standardized (pre, post), each (N, width)."""
    similarity = template[0].T @ member[0] + template[1].T @ member[1]  # (width, width)
    rows, cols = linear_sum_assignment(similarity.double().numpy(), maximize=True)
    perm = torch.empty(len(rows), dtype=torch.long)
    perm[torch.from_numpy(rows)] = torch.from_numpy(cols)
    return perm


def activation_align(
    architecture: Architecture,
    stacked: Mapping[str, torch.Tensor],
    images: torch.Tensor,
    rounds: int = 10,
    template_member: int | None = None,
) -> ActivationAlignment:
    """Align K stacked MLPs (K, ...) by activation correlation on `images` (training data).

    Round 1 matches every member to member `template_member` (default: the medoid by
    activations); each later round matches to the mean of the aligned members' standardized
    activations, until no permutation changes or after `rounds` rounds.
    """
    spec = spec_for(architecture)
    layers = [
        (standardize(pre), standardize(post))
        for pre, post in hidden_activations(architecture, stacked, images)
    ]
    k = layers[0][0].shape[0]
    if template_member is None:
        # medoid by activations: the member whose units best match the zoo-mean activations
        head = slice(0, MEDOID_INPUTS)
        flat = torch.cat([torch.cat(pair, -1)[:, head].flatten(1) for pair in layers], 1)  # (K, L * n * 2w)
        template_member = int(torch.cdist(flat, flat).sum(1).argmin())
    targets = [(pre[template_member], post[template_member]) for pre, post in layers]
    previous: list[Permutations] | None = None
    changed: list[int] = []
    done = 0
    for _ in range(rounds):
        done += 1
        permutations = [
            {f"P_{i}": match_layer(targets[i], (pre[m], post[m])) for i, (pre, post) in enumerate(layers)}
            for m in range(k)
        ]
        if previous is not None:
            changed.append(
                sum(
                    any(not torch.equal(a[n], b[n]) for n in a)
                    for a, b in zip(previous, permutations, strict=True)
                )
            )
            if changed[-1] == 0:
                break
        previous = permutations
        targets = [
            tuple(
                standardize(
                    torch.stack([unit[m][:, p[f"P_{i}"]] for m, p in enumerate(permutations)]).mean(0)
                )
                for unit in (pre, post)
            )
            for i, (pre, post) in enumerate(layers)
        ]
    aligned = apply_member_permutations(spec, permutations, stacked)
    template = {key: value.float().mean(0) for key, value in aligned.items()}
    return ActivationAlignment(aligned, permutations, template, done, changed)

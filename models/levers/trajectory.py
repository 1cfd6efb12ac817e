"""Trajectory checkpoints: several late-epoch states of every training run as flow training data.

`train_with_checkpoints` trains members exactly as `models.zoo.train.train_members` does (same
code, same seeds: the final states are the zoo's) and keeps copies of their states after the
epochs asked for. `align_trajectories` permutes every checkpoint with the permutation that
aligned its own run's final member, so a run's checkpoints land in the same canonical basin as
the run (late checkpoints of one run are linearly connected to it; a separate alignment of each
could pick a different, near-equivalent permutation and smear the run across the template).
"""

from collections.abc import Sequence

import torch

from models.architectures import Architecture
from models.canon import spec_for
from models.canon.permute import Permutations, apply_member_permutations
from models.zoo.datasets import Dataset
from models.zoo.train import Recipe, train_members


def train_with_checkpoints(
    architecture: Architecture,
    dataset: Dataset,
    seeds: Sequence[int],
    recipe: Recipe,
    keep_epochs: Sequence[int],
) -> dict[int, dict[str, torch.Tensor]]:
    """epoch -> stacked state (K, ...) after that epoch, for each of `keep_epochs` (1-based; the
    last epoch is the final, trained zoo)."""
    wanted = set(keep_epochs)
    if not wanted or min(wanted) < 1 or max(wanted) > recipe.epochs:
        raise ValueError(f"keep_epochs must lie in 1..{recipe.epochs}, got {sorted(wanted)}")
    kept: dict[int, dict[str, torch.Tensor]] = {}

    def keep(epoch: int, state: dict[str, torch.Tensor]) -> None:
        if epoch in wanted:
            kept[epoch] = {k: v.clone().contiguous() for k, v in state.items()}

    train_members(architecture, dataset, seeds, recipe, on_epoch=keep)
    return {epoch: kept[epoch] for epoch in sorted(wanted)}


def align_trajectories(
    architecture: Architecture,
    checkpoints: dict[int, dict[str, torch.Tensor]],
    permutations: Sequence[Permutations],
) -> dict[str, torch.Tensor]:
    """All checkpoints (epochs x K runs), each permuted by its run's permutation, stacked epoch by
    epoch: row e * K + k is run k after the e-th kept epoch. `permutations[k]` aligned run k's
    final member (e.g. `models.zoo.templates.TemplateResult.permutations`)."""
    spec = spec_for(architecture)
    aligned = [apply_member_permutations(spec, permutations, state) for state in checkpoints.values()]
    return {key: torch.cat([state[key] for state in aligned]) for key in aligned[0]}

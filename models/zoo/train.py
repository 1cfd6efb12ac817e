"""Batched training of many networks of one architecture, one seed each.

K members train in one process as a *stacked ensemble* (every tensor has a
leading axis of length K). One step gathers a separate mini-batch for every
member, runs all K forwards at once with `torch.vmap` over
`torch.func.functional_call`, and backpropagates the sum over members of each
member's mean cross-entropy: member k's parameters only influence member k's
loss, so the gradient of the sum is every member's own gradient. The optimizers
offered (AdamW, SGD with momentum) are elementwise, so one step on the stacked
tensors is exactly K separate steps.

Determinism: the seed fixes the member's initialization (`torch.manual_seed(seed)`,
then `Architecture.build()`) and, through a derived generator (`shuffle_seed`),
the order in which it sees the training data. What holds, and is tested
(tests/models/test_zoo_train.py):

- a member's weights are bitwise the same whichever other seeds share its batch,
  and bitwise reproducible from run to run for the same batch width K;
- trained alone (this same code with K = 1) it agrees with the batched run up to
  float reassociation: a different K can select differently blocked kernels
  (bmm, grouped convolution), ~1e-8 apart after one step, bitwise equal for the
  digits MLP over a whole epoch. Over a long run the optimizer amplifies such
  last-bit differences (Adam normalizes near-zero gradient components), as it
  would between two machines: after the full mlp-fashion recipe the same seed
  differs by up to ~0.04 in a weight between K = 25 and K = 1, with the same
  accuracy distribution. A zoo records its chunk size, so a rebuild with the same
  settings reproduces it bit for bit.

Every epoch visits `len(train) // batch_size` full mini-batches; the remainder of
each member's shuffled order is skipped (a different remainder every epoch).
"""

import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
from torch import nn
from torch.func import functional_call

from models.architectures import Architecture
from models.weightspace import batched_evaluate, stack_state_dicts
from models.zoo.datasets import Dataset, Split

OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("cosine", "constant")
SUBSET_SEED = 0  # fixes which training examples form `train_subset`
TRAIN_EVAL_EXAMPLES = 10_000  # train accuracy is measured on the first this-many examples trained on
# Members x examples per batched evaluation call: large for MLPs (compute-bound), cache-sized for the
# convolutional and attention families, whose activations per example are ~100x larger.
EVAL_EXAMPLES_PER_CALL = {"mlp": 4096}
DEFAULT_EVAL_EXAMPLES_PER_CALL = 256

StepCallback = Callable[[int, int], None]  # (steps done, total steps)
EpochCallback = Callable[
    [int, dict[str, torch.Tensor]], None
]  # (epochs done, stacked state: views, copy to keep)


@dataclass(frozen=True)
class Recipe:
    """How every member of a zoo is trained; recorded in the zoo manifest."""

    epochs: int
    batch_size: int = 128  # examples per member per step
    lr: float = 1e-3  # peak learning rate
    weight_decay: float = 0.0  # adamw: decoupled decay; sgd: L2 term added to the gradient
    optimizer: str = "adamw"  # one of OPTIMIZERS; adamw uses betas (0.9, 0.999), sgd momentum 0.9
    schedule: str = "cosine"  # one of SCHEDULES; cosine decays lr to 0 over all steps, per step
    train_subset: int | None = None  # train on this many training examples (a fixed subset); None = all

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.schedule!r}; choose one of {', '.join(SCHEDULES)}")
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise ValueError("epochs and batch_size must be positive and lr > 0")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Recipe":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


# Recipes the registered zoos are built with (see README: `make zoos`).
DEFAULT_RECIPES: dict[str, Recipe] = {
    "mlp-digits": Recipe(epochs=30, batch_size=32, lr=3e-3),
    "mlp-fashion": Recipe(epochs=10, batch_size=128, lr=1e-3),
    # One pass over 30k examples keeps a 50-member zoo within ~25 min on one CPU core.
    "cnn-fashion": Recipe(epochs=1, batch_size=128, lr=1e-2, train_subset=30_000),
    # 398 training rows: 12 steps per epoch, 60 epochs of AdamW reach the table's plateau.
    "mlp-breast-cancer": Recipe(epochs=60, batch_size=32, lr=3e-3),
    # 234 steps (one epoch of a fixed 30k subset) at ~0.4 s per member-step on one core here:
    # 50 members in ~100 minutes. SGD + momentum with a cosine decay is the usual BatchNorm
    # ResNet recipe; the members reach ~84% (well short of convergence, the budget's limit).
    "resnet20-fashion": Recipe(
        epochs=1, batch_size=128, lr=0.05, weight_decay=5e-4, optimizer="sgd", train_subset=30_000
    ),
    # 3,600 signals: 57 steps per epoch; 60 epochs fit the training split (100%) and reach
    # ~67% on test, the MLP ceiling the MNIST-1D paper reports; weight decay 0.1 adds ~1 point.
    "mlp-mnist1d": Recipe(epochs=60, batch_size=64, lr=3e-3, weight_decay=0.1),
    # 20 epochs fit the training split (~100%) and reach ~98% on test (one member trained alone).
    "cnn-mnist1d": Recipe(epochs=20, batch_size=64, lr=3e-3, weight_decay=0.05),
    # One epoch of a 30k subset, AdamW: ~0.09 s per member-step, 100 members in ~35 minutes.
    "vit-fashion": Recipe(epochs=1, batch_size=128, lr=2e-3, weight_decay=0.05, train_subset=30_000),
}


def default_recipe(architecture: str) -> Recipe:
    """The registered zoo recipe for `architecture`, or a generic one (10 epochs of AdamW)."""
    return DEFAULT_RECIPES.get(architecture, Recipe(epochs=10))


def shuffle_seed(seed: int) -> int:
    """Seed of the generator that orders member `seed`'s training data (independent of its init)."""
    return int.from_bytes(hashlib.sha256(f"shuffle:{seed}".encode()).digest()[:8], "little") >> 1


def init_members(architecture: Architecture, seeds: Sequence[int]) -> dict[str, torch.Tensor]:
    """Freshly initialized members, one per seed, as a stacked state dict (K, ...)."""
    states = []
    for seed in seeds:
        torch.manual_seed(seed)
        states.append(architecture.build().state_dict())
    return stack_state_dicts(states)


def training_split(dataset: Dataset, recipe: Recipe | None) -> Split:
    """The training examples the recipe trains on: all of them, or a fixed subset (None: members
    trained elsewhere, e.g. imported ones, are measured on the whole training split)."""
    if recipe is None or recipe.train_subset is None or recipe.train_subset >= len(dataset.train):
        return dataset.train
    order = torch.randperm(len(dataset.train), generator=torch.Generator().manual_seed(SUBSET_SEED))
    keep = order[: recipe.train_subset].sort().values
    return Split(dataset.train.images[keep], dataset.train.labels[keep])


def make_optimizer(recipe: Recipe, params: list[torch.Tensor]) -> torch.optim.Optimizer:
    """An elementwise optimizer over the stacked parameters (so each member's update is its own)."""
    if recipe.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=recipe.lr, weight_decay=recipe.weight_decay, fused=True)
    return torch.optim.SGD(params, lr=recipe.lr, momentum=0.9, weight_decay=recipe.weight_decay, fused=True)


def learning_rate(recipe: Recipe, step: int, total_steps: int) -> float:
    """Learning rate at `step` (0-based) of `total_steps`."""
    if recipe.schedule == "constant":
        return recipe.lr
    return 0.5 * recipe.lr * (1.0 + math.cos(math.pi * step / total_steps))


class StackedLeaves:
    """The trained tensors of K members, with stacked matrices stored transposed.

    A batched linear layer's weight gradient comes out of its batched matrix
    product as (K, in, out). Keeping each stacked (K, out, in) parameter as a
    contiguous (K, in, out) leaf, and handing the network its transposed view,
    makes that gradient land in the leaf's own layout: neither gradient
    accumulation nor the fused optimizer needs a transposing copy (about 20% of
    an mlp-fashion step). Buffers and other parameters are kept as they are.
    """

    def __init__(self, stacked: dict[str, torch.Tensor], parameter_names: set[str]):
        self.transposed = {k for k, v in stacked.items() if k in parameter_names and v.dim() == 3}
        self.leaves = {
            k: v.transpose(1, 2).contiguous() if k in self.transposed else v for k, v in stacked.items()
        }
        self.parameters = [v.requires_grad_() for k, v in self.leaves.items() if k in parameter_names]

    def state(self) -> dict[str, torch.Tensor]:
        """The stacked state dict (K, ...) in the architecture's shapes (views of the leaves)."""
        return {k: v.transpose(1, 2) if k in self.transposed else v for k, v in self.leaves.items()}


def per_member_forward(module: nn.Module) -> Callable[[dict[str, torch.Tensor], torch.Tensor], torch.Tensor]:
    """f(stacked state (K, ...), inputs (K, B, ...)) -> logits (K, B, C): member k sees inputs[k].

    In train mode BatchNorm uses each member's batch statistics and updates the
    stacked running statistics in place.
    """

    def one(state: dict[str, torch.Tensor], inputs: torch.Tensor) -> torch.Tensor:
        return functional_call(module, state, (inputs,), tie_weights=False, strict=True)

    return torch.vmap(one, in_dims=(0, 0))


def train_members(
    architecture: Architecture,
    dataset: Dataset,
    seeds: Sequence[int],
    recipe: Recipe,
    on_step: StepCallback | None = None,
    max_steps: int | None = None,
    on_epoch: EpochCallback | None = None,
) -> dict[str, torch.Tensor]:
    """Train one member per seed, all at once; returns the stacked state dict (K, ...).

    `on_step(done, total)` is called after every optimizer step. `max_steps`
    stops early (benchmarks); the learning-rate schedule still spans the full recipe.
    `on_epoch(epochs done, state)` is called after every full epoch with the members' current
    stacked state (live views of the trained tensors: clone what you keep), e.g. to collect
    trajectory checkpoints (models.levers.trajectory).
    """
    module = architecture.build().train()
    parameter_names = {name for name, _ in module.named_parameters()}
    members = StackedLeaves(init_members(architecture, seeds), parameter_names)
    optimizer = make_optimizer(recipe, members.parameters)
    forward = per_member_forward(module)

    train = training_split(dataset, recipe)
    steps_per_epoch = len(train) // recipe.batch_size
    if steps_per_epoch == 0:
        raise ValueError(f"batch_size {recipe.batch_size} exceeds the {len(train)} training examples")
    total_steps = recipe.epochs * steps_per_epoch
    run_steps = total_steps if max_steps is None else min(max_steps, total_steps)
    generators = [torch.Generator().manual_seed(shuffle_seed(seed)) for seed in seeds]

    step = 0
    while step < run_steps:
        order = torch.stack([torch.randperm(len(train), generator=g) for g in generators])  # (K, N)
        for start in range(0, steps_per_epoch * recipe.batch_size, recipe.batch_size):
            if step == run_steps:
                break
            batch = order[:, start : start + recipe.batch_size].flatten()  # K*B example indices
            images = train.images.index_select(0, batch)  # (K*B, ...): faster than advanced indexing
            logits = forward(members.state(), images.view(len(seeds), -1, *images.shape[1:]))  # (K, B, C)
            losses = nn.functional.cross_entropy(
                logits.flatten(0, 1), train.labels[batch], reduction="none"
            ).view(len(seeds), -1)  # (K, B)
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(recipe, step, total_steps)
            optimizer.zero_grad(set_to_none=True)
            losses.mean(dim=1).sum().backward()  # sum over members of each member's mean loss
            optimizer.step()
            step += 1
            if on_step is not None:
                on_step(step, run_steps)
        if on_epoch is not None and step % steps_per_epoch == 0:
            on_epoch(step // steps_per_epoch, {k: v.detach() for k, v in members.state().items()})
    return {k: v.detach().contiguous() for k, v in members.state().items()}


@dataclass(frozen=True)
class MemberMetrics:
    """Accuracy (in [0, 1]) and mean cross-entropy of one trained member, in eval mode."""

    seed: int
    train_acc: float  # on the first TRAIN_EVAL_EXAMPLES of the examples it was trained on
    val_acc: float
    test_acc: float
    train_loss: float
    val_loss: float
    test_loss: float

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def eval_batch_size(architecture: Architecture, members: int) -> int:
    """Examples per batched evaluation call of `members` networks (see EVAL_EXAMPLES_PER_CALL)."""
    per_call = EVAL_EXAMPLES_PER_CALL.get(architecture.family, DEFAULT_EVAL_EXAMPLES_PER_CALL)
    return max(1, per_call // members)


def evaluate_members(
    architecture: Architecture,
    stacked: dict[str, torch.Tensor],
    dataset: Dataset,
    recipe: Recipe | None,
    seeds: Sequence[int],
) -> list[MemberMetrics]:
    """Train / validation / test loss and accuracy of K stacked members, batched (`recipe` None
    for members trained elsewhere: see training_split)."""
    module = architecture.build()
    batch_size = eval_batch_size(architecture, len(seeds))
    train = training_split(dataset, recipe)
    results = {}
    for name, split in (
        ("train", Split(train.images[:TRAIN_EVAL_EXAMPLES], train.labels[:TRAIN_EVAL_EXAMPLES])),
        ("val", dataset.val),
        ("test", dataset.test),
    ):
        results[name] = batched_evaluate(module, stacked, split.images, split.labels, batch_size)
    return [
        MemberMetrics(
            seed=seed,
            train_acc=results["train"][1][k].item(),
            val_acc=results["val"][1][k].item(),
            test_acc=results["test"][1][k].item(),
            train_loss=results["train"][0][k].item(),
            val_loss=results["val"][0][k].item(),
            test_loss=results["test"][0][k].item(),
        )
        for k, seed in enumerate(seeds)
    ]


def describe_training(dataset: Dataset, recipe: Recipe) -> str:
    """Which examples a member trained with `recipe` saw, in words (for input contracts)."""
    seen = dataset.train_description
    if recipe.train_subset is not None and recipe.train_subset < len(dataset.train):
        seen = f"a fixed {recipe.train_subset:,}-image subset (seed {SUBSET_SEED}) of {seen}"
    return f"{seen}; {recipe.epochs} epoch{'s' if recipe.epochs != 1 else ''}"

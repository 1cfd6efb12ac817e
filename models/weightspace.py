"""Weight space: state dicts as flat vectors, stacked ensembles, batched forward.

Flat order (stable and documented): the module's `state_dict()` order, which is
the order modules and tensors are registered in the architecture file, each
tensor flattened row-major. Only floating-point entries are flattened;
integer buffers (BatchNorm's `num_batches_tracked`) are left out. By default
only parameters are flattened: BatchNorm running statistics are data, not
weights, and are recomputed after generation.

A *stacked ensemble* of K networks is a state dict whose every tensor has a
leading axis of length K.
"""

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call

StateDict = Mapping[str, torch.Tensor]


class StateDictError(ValueError):
    """A state dict does not match the architecture; the message names the keys."""


def check_state_dict(state_dict: StateDict, reference: StateDict, stacked: bool = False) -> None:
    """Raise StateDictError naming missing, unexpected and mis-shaped keys.

    With `stacked=True` every tensor must carry one extra leading (ensemble) axis,
    of the same length for all of them.
    """
    missing = [k for k in reference if k not in state_dict]
    extra = [k for k in state_dict if k not in reference]
    lead = 1 if stacked else 0
    misshaped = [
        f"{k}: expected {tuple(reference[k].shape)}, got {tuple(state_dict[k].shape[lead:])}"
        for k in reference
        if k in state_dict and tuple(state_dict[k].shape[lead:]) != tuple(reference[k].shape)
    ]
    problems = []
    if missing:
        problems.append(f"missing keys: {', '.join(missing)}")
    if extra:
        problems.append(f"unexpected keys: {', '.join(extra)}")
    if misshaped:
        problems.append(f"mis-shaped tensors: {'; '.join(misshaped)}")
    if stacked and not problems:
        lengths = {state_dict[k].shape[0] if state_dict[k].dim() else None for k in reference}
        if len(lengths) != 1 or None in lengths:
            problems.append(f"ensemble axes differ in length: {sorted(map(str, lengths))}")
    if problems:
        raise StateDictError("state dict does not match the architecture: " + "; ".join(problems))


@dataclass(frozen=True)
class WeightLayout:
    """Where each tensor lives in the flat vector: `entries[i] = (key, shape)`."""

    entries: tuple[tuple[str, tuple[int, ...]], ...]

    @classmethod
    def from_module(cls, module: nn.Module, include_buffers: bool = False) -> "WeightLayout":
        parameter_names = {name for name, _ in module.named_parameters()}
        entries = tuple(
            (key, tuple(t.shape))
            for key, t in module.state_dict().items()
            if t.is_floating_point() and (include_buffers or key in parameter_names)
        )
        return cls(entries)

    @property
    def keys(self) -> list[str]:
        return [k for k, _ in self.entries]

    @property
    def sizes(self) -> list[int]:
        return [torch.Size(s).numel() for _, s in self.entries]

    @property
    def dim(self) -> int:
        """Length D of the flat vector."""
        return sum(self.sizes)

    def flatten(self, state_dict: StateDict) -> torch.Tensor:
        """State dict -> (D,)."""
        return torch.cat([state_dict[k].reshape(-1) for k, _ in self.entries])

    def unflatten(self, vector: torch.Tensor) -> dict[str, torch.Tensor]:
        """(D,) -> state dict of views into `vector`."""
        parts = vector.split(self.sizes)
        return {k: p.view(shape) for (k, shape), p in zip(self.entries, parts, strict=True)}

    def flatten_stacked(self, stacked: StateDict) -> torch.Tensor:
        """Stacked ensemble -> (K, D)."""
        return torch.cat([stacked[k].flatten(1) for k, _ in self.entries], dim=1)

    def unflatten_stacked(self, matrix: torch.Tensor) -> dict[str, torch.Tensor]:
        """(K, D) -> stacked ensemble of views into `matrix`."""
        parts = matrix.split(self.sizes, dim=1)
        return {k: p.view(-1, *shape) for (k, shape), p in zip(self.entries, parts, strict=True)}


def stack_state_dicts(state_dicts: Sequence[StateDict]) -> dict[str, torch.Tensor]:
    """K state dicts with equal keys and shapes -> one stacked ensemble."""
    if not state_dicts:
        raise ValueError("cannot stack an empty list of state dicts")
    for sd in state_dicts[1:]:
        check_state_dict(sd, state_dicts[0])
    return {k: torch.stack([sd[k] for sd in state_dicts]) for k in state_dicts[0]}


def unstack_state_dicts(stacked: StateDict) -> list[dict[str, torch.Tensor]]:
    """Stacked ensemble -> list of K state dicts (views)."""
    count = ensemble_size(stacked)
    return [{k: v[i] for k, v in stacked.items()} for i in range(count)]


def ensemble_size(stacked: StateDict) -> int:
    """K, the length of the leading axis shared by every tensor."""
    return next(iter(stacked.values())).shape[0]


LOOP_SLICE = 250  # images per call when networks run one after the other (eval mode)


def batched_forward(module: nn.Module, stacked: StateDict, x: torch.Tensor) -> torch.Tensor:
    """Run K networks on one input batch: x (B, ...) -> logits (K, B, C).

    `module` supplies the architecture (its own weights are ignored) and the
    train/eval mode. In train mode BatchNorm normalizes with batch statistics
    and updates the stacked running statistics in place, exactly as K separate
    forwards would. Networks made of Linear layers only run as one vmapped call
    (batched matrix products); others one after the other, since vmap turns a
    convolution into a grouped one and attention into batched small products,
    2.4-3.6x slower on a CPU than K plain forwards (ViT, ResNet-20, CNN), and in
    eval mode on LOOP_SLICE images at a time (1,000 at once run half as fast).
    """

    if _linear_only(module):
        return vmapped_forward(module, stacked, x)
    # one network at a time: in eval mode on slices of the batch that stay in cache (~2x), in
    # train mode on the whole batch (BatchNorm normalizes with the batch's statistics)
    step = max(len(x), 1) if module.training else LOOP_SLICE
    outputs = []
    for i in range(ensemble_size(stacked)):
        state = {k: v[i] for k, v in stacked.items()}
        outputs.append(torch.cat([_forward(module, state, x[s : s + step]) for s in range(0, len(x), step)]))
    return torch.stack(outputs)


def vmapped_forward(module: nn.Module, stacked: StateDict, x: torch.Tensor) -> torch.Tensor:
    """All K networks in one vmapped call: x (B, ...) -> logits (K, B, C) (batched_forward's path
    for MLPs; for other families `bench.batched_eval` compares it with theirs)."""
    return torch.vmap(lambda state, inputs: _forward(module, state, inputs), in_dims=(0, None))(
        dict(stacked), x
    )


def _forward(module: nn.Module, state: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    return functional_call(module, state, (x,), tie_weights=False, strict=True)


def _linear_only(module: nn.Module) -> bool:
    """True if every layer with parameters of `module` is an nn.Linear (an MLP)."""
    return all(
        isinstance(layer, nn.Linear)
        for layer in module.modules()
        if next(layer.parameters(recurse=False), None) is not None
    )


@contextmanager
def eval_mode(module: nn.Module) -> Iterator[nn.Module]:
    """Put `module` in eval mode and no-grad for the block, then restore its mode."""
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            yield module
    finally:
        module.train(was_training)


def batched_evaluate(
    module: nn.Module,
    stacked: StateDict,
    images: torch.Tensor,
    labels: torch.Tensor,
    batch_size: int = 1000,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean cross-entropy loss and accuracy of K networks in eval mode.

    images (N, ...), labels (N,) -> (loss (K,), accuracy (K,)), accuracy in [0, 1].
    """
    k = ensemble_size(stacked)
    total_loss, correct = torch.zeros(k), torch.zeros(k)
    with eval_mode(module):
        for start in range(0, len(labels), batch_size):
            x, y = images[start : start + batch_size], labels[start : start + batch_size]
            logits = batched_forward(module, stacked, x)  # (K, B, C)
            total_loss += (
                nn.functional.cross_entropy(logits.flatten(0, 1), y.repeat(k), reduction="none")
                .view(k, -1)
                .sum(1)
                .cpu()
            )
            correct += (logits.argmax(-1) == y).sum(1).cpu().float()
    return total_loss / len(labels), correct / len(labels)


def interpolation_path(
    module: nn.Module, a: StateDict, b: StateDict, images: torch.Tensor, labels: torch.Tensor, points: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Loss and accuracy (points,) at evenly spaced points of the straight path from state `a`
    (t = 0) to state `b` (t = 1), evaluated as one batched ensemble."""
    ts = torch.linspace(0, 1, points)
    stacked = {k: torch.stack([(1 - t) * a[k] + t * b[k] for t in ts]) for k in a}
    return batched_evaluate(module, stacked, images, labels)


def loss_barrier(losses: torch.Tensor) -> float:
    """Largest excess of the path's losses (points,) over the straight line between its ends."""
    ts = torch.linspace(0, 1, len(losses))
    return float((losses - ((1 - ts) * losses[0] + ts * losses[-1])).max())


def predictions(
    module: nn.Module, stacked: StateDict, images: torch.Tensor, batch_size: int = 1000
) -> torch.Tensor:
    """Predicted classes of K networks in eval mode: images (N, ...) -> (K, N) int64."""
    with eval_mode(module):
        return torch.cat(
            [
                batched_forward(module, stacked, images[s : s + batch_size]).argmax(-1)
                for s in range(0, len(images), batch_size)
            ],
            dim=1,
        )


def probabilities(
    module: nn.Module,
    stacked: StateDict,
    images: torch.Tensor,
    batch_size: int = 1000,
    network_chunk: int = 64,
) -> torch.Tensor:
    """Softmax class probabilities of K networks in eval mode: images (N, ...) -> (K, N, C) float32.

    Runs `network_chunk` networks on `batch_size` images at a time, so the activations held at
    once stay bounded whatever K and N; only the (K, N, C) result grows with them (4 bytes per
    entry, on the inputs' device). `probabilities(...).argmax(-1)` are the `predictions` (but where
    two classes' probabilities tie in float32).
    """
    k = ensemble_size(stacked)
    chunks = []
    with eval_mode(module):
        for first in range(0, k, network_chunk):
            part = {key: value[first : first + network_chunk] for key, value in stacked.items()}
            chunks.append(
                torch.cat(
                    [
                        batched_forward(module, part, images[s : s + batch_size]).float().softmax(-1)
                        for s in range(0, len(images), batch_size)
                    ],
                    dim=1,
                )
            )
    return torch.cat(chunks)


def recalibrate_batchnorm(
    module: nn.Module, stacked: StateDict, images: torch.Tensor, batch_size: int = 500
) -> dict[str, torch.Tensor]:
    """Recompute BatchNorm running statistics of K networks from `images` (N, ...).

    Each running mean/var becomes the batch-size-weighted average of the
    per-batch statistics over `images` (what PyTorch's momentum=None gives for
    equal batches), computed in train mode; parameters are untouched. Returns
    a new stacked state dict; a network without BatchNorm comes back unchanged.
    Use training data here, never the test set.
    """
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return dict(stacked)
    state = {k: v.clone() for k, v in stacked.items()}
    stat_keys = [k for k in state if k.endswith(("running_mean", "running_var"))]
    sums = {k: torch.zeros_like(state[k]) for k in stat_keys}
    momenta = [m.momentum for m in norms]
    was_training = module.training
    try:
        for m in norms:
            m.momentum = 1.0  # running statistics := this batch's statistics
        module.train()
        with torch.no_grad():
            for start in range(0, len(images), batch_size):
                batch = images[start : start + batch_size]
                batched_forward(module, state, batch)
                for k in stat_keys:
                    sums[k] += state[k] * len(batch)
    finally:
        for m, momentum in zip(norms, momenta, strict=True):
            m.momentum = momentum
        module.train(was_training)
    for k in stat_keys:
        state[k] = sums[k] / len(images)
    return state

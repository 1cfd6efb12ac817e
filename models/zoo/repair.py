"""REPAIR-style per-neuron statistics reset for networks without BatchNorm.

Jordan et al., "REPAIR: REnormalizing Permuted Activations for Interpolation Repair", ICLR 2023:
a network whose weights were moved (interpolated between two aligned members, or perturbed with
noise) loses the per-neuron statistics of its hidden pre-activations ("variance collapse");
resetting each neuron's mean and std to a target, measured on training images, repairs most of
the damage without a gradient step. BatchNorm recalibration
(`models.weightspace.recalibrate_batchnorm`) plays this role for networks with BatchNorm; this
module does it for MLPs (`models.architectures.mlp.MLP`: Linear layers `layers.0 ... layers.L`
with an activation between them), where the reset folds into each hidden layer's weights and bias:

    z = W x + b                    pre-activations of one hidden layer, (K, B, H)
    m, s = mean and std of z over the images, per network and neuron, (K, H)
    W' = W * (t_s / s)[:, :, None]     (K, H, in)
    b' = (b - m) * t_s / s + t_m       (K, H)

so that z' = W' x + b' has exactly mean t_m and std t_s on those images. Layers are repaired
in order, each measured after the ones before it were repaired, so every layer meets its target
on the images it was fitted on. The output layer is left alone. A neuron whose std is below
`eps` (constant on the images) is only shifted to its target mean (its scale is kept).

Targets: for a perturbed member, the parent member's own statistics; for an interpolation
(1 - w) a + w b of aligned members, the interpolation of a's and b's statistics (of means and of
stds). Architectures other than that MLP are not supported (`supports_repair` is False): the
baselines skip their REPAIR variants there, and for BatchNorm networks the recalibration every
candidate already gets is the analogue.

Statistics are population (biased) std over the images, accumulated in float64.
"""

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from models.architectures.mlp import MLP

StackedState = Mapping[str, torch.Tensor]


def supports_repair(module: nn.Module) -> bool:
    """True for the MLP family (Linear layers followed by an activation), without BatchNorm."""
    return isinstance(module, MLP)


def hidden_layers(module: nn.Module) -> list[str]:
    """Key prefixes of the layers that are repaired: every Linear layer but the output one."""
    if not supports_repair(module):
        raise ValueError(
            f"REPAIR supports the MLP family only, not {type(module).__name__}; networks with BatchNorm "
            "get the same effect from models.weightspace.recalibrate_batchnorm"
        )
    return [f"layers.{i}" for i in range(len(module.layers) - 1)]


@dataclass(frozen=True)
class LayerStatistics:
    """Per-neuron pre-activation statistics of one hidden layer of K networks."""

    mean: torch.Tensor  # (K, H) float64
    std: torch.Tensor  # (K, H) float64, population std

    def index(self, rows: torch.Tensor) -> "LayerStatistics":
        """The statistics of networks `rows` (M,) -> (M, H)."""
        return LayerStatistics(self.mean[rows], self.std[rows])


def interpolate_statistics(
    first: list[LayerStatistics], second: list[LayerStatistics], weight: float
) -> list[LayerStatistics]:
    """(1 - weight) * first + weight * second, layer by layer, for means and stds (each (K, H))."""
    return [
        LayerStatistics((1 - weight) * a.mean + weight * b.mean, (1 - weight) * a.std + weight * b.std)
        for a, b in zip(first, second, strict=True)
    ]


def _preactivation(module: MLP, state: StackedState, images: torch.Tensor, layer: int) -> torch.Tensor:
    """Pre-activations of hidden layer `layer` of K stacked MLPs: images (B, ...) -> (K, B, H)."""
    x = images.flatten(1).to(state["layers.0.weight"])
    h = torch.einsum("bi,khi->kbh", x, state["layers.0.weight"]) + state["layers.0.bias"][:, None, :]
    for i in range(1, layer + 1):
        weight, bias = state[f"layers.{i}.weight"], state[f"layers.{i}.bias"]
        h = torch.baddbmm(bias[:, None, :], module.act(h), weight.transpose(1, 2))
    return h


def layer_statistics(
    module: nn.Module, state: StackedState, images: torch.Tensor, layer: int, batch_size: int = 500
) -> LayerStatistics:
    """Mean and std (K, H) of hidden layer `layer`'s pre-activations of K stacked networks on
    images (N, ...), computed in chunks of `batch_size` images."""
    hidden_layers(module)  # refuses unsupported architectures
    total = squares = None
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            z = _preactivation(module, state, images[start : start + batch_size], layer).double()
            part, part_sq = z.sum(1), (z * z).sum(1)
            total = part if total is None else total + part
            squares = part_sq if squares is None else squares + part_sq
    mean = total / len(images)
    variance = (squares / len(images) - mean * mean).clamp_min(0)
    return LayerStatistics(mean, variance.sqrt())


def preactivation_statistics(
    module: nn.Module, state: StackedState, images: torch.Tensor, batch_size: int = 500
) -> list[LayerStatistics]:
    """Statistics of every hidden layer of K stacked networks as they are (no repair)."""
    return [layer_statistics(module, state, images, i, batch_size) for i in range(len(hidden_layers(module)))]


def repair(
    module: nn.Module,
    state: StackedState,
    images: torch.Tensor,
    targets: list[LayerStatistics],
    eps: float = 1e-6,
    batch_size: int = 500,
) -> dict[str, torch.Tensor]:
    """Reset each hidden neuron of K stacked MLPs to its target pre-activation mean and std.

    state: stacked state dict (K, ...); images (N, ...) training images (never test data);
    targets: one LayerStatistics (K, H) per hidden layer. Returns a new stacked state dict with
    only the hidden layers' weights (K, H, in) and biases (K, H) changed.
    """
    prefixes = hidden_layers(module)
    if len(targets) != len(prefixes):
        raise ValueError(f"REPAIR needs one target per hidden layer ({len(prefixes)}), got {len(targets)}")
    out = {key: value.clone() for key, value in state.items()}
    for layer, (prefix, target) in enumerate(zip(prefixes, targets, strict=True)):
        current = layer_statistics(module, out, images, layer, batch_size)
        flat = current.std < eps
        scale = torch.where(
            flat, torch.ones_like(current.std), target.std.to(current.std) / current.std.clamp_min(eps)
        )
        weight, bias = out[f"{prefix}.weight"], out[f"{prefix}.bias"]
        new_bias = (bias.double() - current.mean) * scale + target.mean.to(current.mean)
        out[f"{prefix}.weight"] = (weight.double() * scale[:, :, None]).to(weight.dtype)
        out[f"{prefix}.bias"] = new_bias.to(bias.dtype)
    return out

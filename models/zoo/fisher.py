"""Diagonal empirical Fisher of stacked networks, for the Fisher-shaped noise baseline.

    F_k[i] = mean over examples n of (d/d theta_i  -log p_k(y_n | x_n))^2

for network k with flat parameters theta (the layout order of `models.weightspace.WeightLayout`),
on labelled training examples (x_n, y_n) with the true labels ("empirical" Fisher), in eval mode
(BatchNorm uses its running statistics). For the MLP family a per-example gradient of a Linear
layer is an outer product, delta_n x_n^T (delta_n = d loss_n / d pre-activation), so

    F[W] = mean_n (delta_n^2) (x_n^2)^T,   F[b] = mean_n delta_n^2

is computed for all K networks at once from one backward pass of the summed loss (each
example's loss depends on its own pre-activations only). Other architectures take per-example
gradients from torch.func (vmap over examples of grad), `batch_size` examples at a time, one
network at a time, so memory holds batch_size x D gradients at once.

Noise scaled by 1 / sqrt(F) (`models.zoo.baselines.fisher_noisy_members`) moves a network
mostly along directions the training loss hardly sees: large weight-space distance, little
functional change, which is why weight distance alone cannot measure novelty.
"""

from collections.abc import Mapping
from functools import partial

import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from models.architectures.mlp import MLP
from models.weightspace import WeightLayout, eval_mode


def _example_loss(
    params: dict[str, torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    module: nn.Module,
    buffers: dict[str, torch.Tensor],
) -> torch.Tensor:
    """Cross-entropy of one example x (...) with label y () under `params` (and fixed buffers)."""
    logits = functional_call(module, {**params, **buffers}, (x[None],), tie_weights=False)
    return nn.functional.cross_entropy(logits, y[None])


def diagonal_fisher(
    module: nn.Module,
    stacked: Mapping[str, torch.Tensor],
    images: torch.Tensor,
    labels: torch.Tensor,
    batch_size: int = 128,
) -> torch.Tensor:
    """Diagonal empirical Fisher of K stacked networks: images (N, ...), labels (N,) -> (K, D)
    float32, D the flat parameter count (buffers such as BatchNorm statistics are held fixed)."""
    if isinstance(module, MLP):
        return _mlp_fisher(module, stacked, images, labels, batch_size * 4)
    return per_example_fisher(module, stacked, images, labels, batch_size)


def per_example_fisher(
    module: nn.Module,
    stacked: Mapping[str, torch.Tensor],
    images: torch.Tensor,
    labels: torch.Tensor,
    batch_size: int = 128,
) -> torch.Tensor:
    """`diagonal_fisher` for any architecture, from torch.func per-example gradients (slower)."""
    layout = WeightLayout.from_module(module)
    keys = set(layout.keys)
    count = next(iter(stacked.values())).shape[0]
    rows = []
    with eval_mode(module), torch.enable_grad():
        for k in range(count):
            params = {key: stacked[key][k].detach() for key in layout.keys}
            buffers = {key: value[k] for key, value in stacked.items() if key not in keys}

            loss = partial(_example_loss, module=module, buffers=buffers)
            per_example = vmap(grad(loss), in_dims=(None, 0, 0))
            total = torch.zeros(layout.dim, dtype=torch.float64, device=images.device)
            for start in range(0, len(labels), batch_size):
                x, y = images[start : start + batch_size], labels[start : start + batch_size]
                grads = per_example(params, x, y)
                flat = torch.cat([grads[key].flatten(1) for key in layout.keys], dim=1).double()
                total += (flat * flat).sum(0)
            rows.append((total / len(labels)).float())
    return torch.stack(rows)


def _mlp_fisher(
    module: MLP,
    stacked: Mapping[str, torch.Tensor],
    images: torch.Tensor,
    labels: torch.Tensor,
    batch_size: int,
) -> torch.Tensor:
    """The MLP case of `diagonal_fisher`: outer-product per-example gradients, K networks at once."""
    layout = WeightLayout.from_module(module)
    count = len(module.layers)
    weights = [stacked[f"layers.{i}.weight"].detach() for i in range(count)]  # (K, out, in)
    biases = [stacked[f"layers.{i}.bias"].detach() for i in range(count)]  # (K, out)
    totals = {
        key: torch.zeros(stacked[key].shape, dtype=torch.float64, device=images.device) for key in layout.keys
    }
    k = weights[0].shape[0]
    with torch.enable_grad():
        for start in range(0, len(labels), batch_size):
            x = images[start : start + batch_size].flatten(1).to(weights[0])
            y = labels[start : start + batch_size]
            inputs, pre = [], []
            h = x.expand(k, *x.shape)  # (K, B, in)
            for i in range(count):
                inputs.append(h.detach())
                z = torch.baddbmm(biases[i][:, None, :], h, weights[i].transpose(1, 2))
                if not z.requires_grad:  # the first layer: its input is data
                    z.requires_grad_(True)
                pre.append(z)
                h = module.act(z) if i < count - 1 else z
            loss = nn.functional.cross_entropy(h.flatten(0, 1), y.repeat(k), reduction="sum")
            deltas = torch.autograd.grad(loss, pre)  # per-example d loss_n / d z_n, (K, B, out)
            for i, (delta, x_in) in enumerate(zip(deltas, inputs, strict=True)):
                d2 = delta.double().square()
                totals[f"layers.{i}.weight"] += torch.einsum("kbo,kbi->koi", d2, x_in.double().square())
                totals[f"layers.{i}.bias"] += d2.sum(1)
    flat = layout.flatten_stacked({key: value / len(labels) for key, value in totals.items()})
    return flat.float()

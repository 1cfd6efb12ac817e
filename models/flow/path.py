"""Straight probability path and the conditional flow-matching loss.

A pair (x0, x1), noise x0 ~ N(0, I) and a data code x1, defines the path
x_t = (1 - t) x0 + t x1 with constant velocity x1 - x0. The loss regresses the
network onto that velocity at t ~ U[0, 1]:

    loss = E || v(x_t, t) - (x1 - x0) ||^2   (mean over batch and coordinates)

Minibatch optimal transport (optional) re-pairs the noise rows with the data
rows of each minibatch so that the total squared distance is minimal (exact
assignment, scipy's linear_sum_assignment). Paths then cross less, the learned
field is straighter and few ODE steps suffice.

All randomness (noise, times) comes from a CPU torch.Generator, so a seed gives
the same pairs on any device.
"""

from dataclasses import dataclass

import torch
from scipy.optimize import linear_sum_assignment
from torch import nn


@dataclass(frozen=True)
class PathSample:
    """One minibatch of points on the path; every tensor is (B, d) except t (B,)."""

    x0: torch.Tensor  # noise, after optional OT re-pairing
    x1: torch.Tensor  # data
    t: torch.Tensor  # times in [0, 1)
    xt: torch.Tensor  # (1 - t) x0 + t x1
    target: torch.Tensor  # x1 - x0


def optimal_transport_pairing(x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
    """Rows of x0 (B, d) reordered so that sum_i ||x0[i] - x1[i]||^2 is minimal; returns (B, d)."""
    cost = torch.cdist(x0.double(), x1.double()).square().cpu().numpy()  # (B, B)
    noise_rows, data_rows = linear_sum_assignment(cost)
    order = torch.empty(len(data_rows), dtype=torch.long)
    order[torch.from_numpy(data_rows)] = torch.from_numpy(noise_rows)
    return x0[order.to(x0.device)]


def sample_path(x1: torch.Tensor, generator: torch.Generator, minibatch_ot: bool = False) -> PathSample:
    """Draw noise and times for data x1 (B, d) from the CPU `generator`; see PathSample."""
    x0 = torch.randn(x1.shape, generator=generator).to(x1)
    t = torch.rand(len(x1), generator=generator).to(x1)
    if minibatch_ot:
        x0 = optimal_transport_pairing(x0, x1)
    xt = (1 - t[:, None]) * x0 + t[:, None] * x1
    return PathSample(x0=x0, x1=x1, t=t, xt=xt, target=x1 - x0)


def cfm_loss(
    model: nn.Module, x1: torch.Tensor, generator: torch.Generator, minibatch_ot: bool = False
) -> torch.Tensor:
    """Conditional flow-matching loss (scalar) of velocity `model` on data x1 (B, d)."""
    path = sample_path(x1, generator, minibatch_ot)
    return (model(path.xt, path.t) - path.target).square().mean()

"""Candidate samplers that change one thing about the shipped `CandidateSampler`.

- `ShapedResidualSampler`: the residual noise has a per-coordinate sigma (D,) instead of one
  number. `loo_residual_sigma` estimates it from the zoo: the part of each member that lies
  outside the span of the *other* members (leave one out) is what a new training run adds
  beyond any affine combination of the zoo, i.e. what a flow confined to the zoo's span can
  never produce. Its per-coordinate RMS over the members is the sigma (a diagonal residual
  model outside the PCA span, as in probabilistic PCA / factor analysis, instead of the
  shipped isotropic one).
- `TemperatureSampler`: the ODE starts from tau * N(0, I) instead of N(0, I) (reduced-temperature
  sampling, as in Glow: Kingma & Dhariwal 2018), which trades diversity for typicality.

Both keep the stream contract of the shipped sampler: candidate i depends only on (seed, i).
"""

import torch

from models.flow import WeightEncoder, noise_rows
from models.flow.samplers import BLOCK_ROWS, fixed_block_velocity, sample
from models.generator.sampling import Candidates, CandidateSampler, Progress, residual_noise
from models.weightspace import eval_mode


def loo_residual_sigma(weights: torch.Tensor) -> torch.Tensor:
    """Per-coordinate RMS (D,) over members of weights (K, D) of each member's residual outside the
    affine span of the other K - 1 members."""
    x = weights.double()
    k = len(x)
    residuals = torch.empty_like(x)
    for i in range(k):
        others = torch.cat([x[:i], x[i + 1 :]])
        mean = others.mean(0)
        _, values, basis = torch.linalg.svd(others - mean, full_matrices=False)  # rank <= K - 2
        basis = basis[values > values[0] * 1e-9]
        centered = x[i] - mean
        residuals[i] = centered - (basis @ centered) @ basis
    return residuals.square().mean(0).sqrt().float()


class ShapedResidualSampler(CandidateSampler):
    """The shipped sampler with residual noise sigma (D,) per coordinate (0 = none)."""

    def __init__(self, flow: torch.nn.Module, encoder: WeightEncoder, residual_sigma: torch.Tensor):
        super().__init__(flow, encoder, 0.0)
        self.shaped_sigma = residual_sigma.float()

    def decode(self, codes: torch.Tensor, seed: int, start: int, residual: bool = True) -> torch.Tensor:
        flat = self.encoder.decode(codes.to(self.device))
        if residual:
            noise = residual_noise(len(codes), flat.shape[1], seed, 1.0, start) * self.shaped_sigma
            flat = flat + noise.to(self.device)
        return flat


class TemperatureSampler(CandidateSampler):
    """The shipped sampler whose ODE starts from `temperature` x the seeded noise."""

    def __init__(
        self, flow: torch.nn.Module, encoder: WeightEncoder, residual_sigma: float, temperature: float
    ):
        super().__init__(flow, encoder, residual_sigma)
        self.temperature = temperature

    def codes(self, count: int, seed: int, method: str, steps: int, start: int = 0) -> torch.Tensor:
        padded = -(-count // BLOCK_ROWS) * BLOCK_ROWS
        noise = torch.zeros(padded, self.encoder.code_dim)
        noise[:count] = noise_rows(count, self.encoder.code_dim, seed, start) * self.temperature
        with eval_mode(self.flow):
            codes = sample(fixed_block_velocity(self.flow), noise.to(self.device), method, steps)
        return codes[:count].float().cpu()

    def sample(
        self,
        count: int,
        seed: int,
        method: str,
        steps: int,
        progress: Progress | None = None,
        chunk_size: int = 256,
        residual: bool = True,
        start: int = 0,
    ) -> torch.Tensor:
        return self.decode(self.codes(count, seed, method, steps, start), seed, start, residual)

    def stream(self, seed: int, method: str, steps: int) -> Candidates:
        cached: dict[int, torch.Tensor] = {}

        def candidates(start: int, n: int) -> torch.Tensor:
            block = start - start % BLOCK_ROWS
            if block not in cached:
                cached.clear()
                cached[block] = self.decode(self.codes(BLOCK_ROWS, seed, method, steps, block), seed, block)
            return cached[block][start - block : start - block + n]

        return candidates

"""Sampling candidates: seeded noise --ODE--> codes --encoder.decode--> flat weights (+ residual noise).

Candidate i of a seed's stream depends only on (seed, i): the ODE's starting noise and the
residual noise are drawn row by row from `models.flow.noise_rows`, so any slice of the stream
can be computed alone and a smaller request is a prefix of a larger one.
"""

from collections.abc import Callable

import torch

from models.flow import WeightEncoder, generate_codes, noise_rows
from models.flow.samplers import BLOCK_ROWS

RESIDUAL_STREAM = 1  # noise_rows stream of the residual noise (the ODE's noise is stream 0)
Candidates = Callable[[int, int], torch.Tensor]  # (start, n) -> flat weights (n, D) of candidates start..
Progress = Callable[[int, int], None]  # (done, total)


def residual_noise(count: int, dim: int, seed: int, sigma: float, start: int = 0) -> torch.Tensor:
    """sigma * N(0, I) rows (count, dim): rows start.. of the seed's residual stream (row i: (seed, i))."""
    return noise_rows(count, dim, seed, start, stream=RESIDUAL_STREAM).mul_(sigma)


class CandidateSampler:
    """The flow, the encoder and the residual noise of one artifact: flat candidate weights."""

    def __init__(self, flow: torch.nn.Module, encoder: WeightEncoder, residual_sigma: float):
        self.flow = flow
        self.encoder = encoder
        self.residual_sigma = residual_sigma  # per coordinate of the decoded weights; 0 = none

    @property
    def device(self) -> torch.device:
        return next(self.flow.parameters()).device

    def decode(self, codes: torch.Tensor, seed: int, start: int, residual: bool = True) -> torch.Tensor:
        """Codes (n, d) of candidates start.. of the seed's stream -> flat weights (n, D), plus the
        residual noise of those candidates unless `residual` is False."""
        flat = self.encoder.decode(codes.to(self.device))
        if residual and self.residual_sigma > 0:
            noise = residual_noise(len(codes), flat.shape[1], seed, self.residual_sigma, start)
            flat = flat + noise.to(self.device)
        return flat

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
        """Flat weights (count, D) of candidates start.. of the seed's stream."""
        if count < 1:
            raise ValueError(f"count must be at least 1, got {count}")
        codes = generate_codes(
            self.flow,
            count,
            self.encoder.code_dim,
            seed,
            method=method,
            steps=steps,
            chunk_size=chunk_size,
            progress=progress,
            start=start,
        )
        return self.decode(codes, seed, start, residual)

    def stream(self, seed: int, method: str, steps: int) -> Candidates:
        """candidates(start, n) for screening: the ODE and the decoding run on whole BLOCK_ROWS-aligned
        blocks of the stream (the last one kept; one pass over the components per block), and
        candidates take the rows asked for (n <= BLOCK_ROWS, within one block)."""
        cached: dict[int, torch.Tensor] = {}

        def candidates(start: int, n: int) -> torch.Tensor:
            block = start - start % BLOCK_ROWS
            if block not in cached:
                cached.clear()
                codes = generate_codes(
                    self.flow, BLOCK_ROWS, self.encoder.code_dim, seed, method, steps, start=block
                )
                cached[block] = self.decode(codes, seed, block)
            return cached[block][start - block : start - block + n]

        return candidates

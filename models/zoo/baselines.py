"""Trivial weight generators that any learned generator must beat.

All work on canonical (aligned) flat weights zoo (K, D) and return (M, D).
"""

import torch


def noisy_members(
    zoo: torch.Tensor, count: int, ratio: float, zoo_loo_median: float, seed: int
) -> torch.Tensor:
    """A random zoo member plus isotropic Gaussian noise.

    The noise scale sigma = ratio * zoo_loo_median / sqrt(D) puts each network at
    distance ~ ratio * zoo_loo_median from its source member, i.e. novelty ratio ~ `ratio`.
    """
    g = torch.Generator().manual_seed(seed)
    picks = torch.randint(len(zoo), (count,), generator=g)
    sigma = ratio * zoo_loo_median / zoo.shape[1] ** 0.5
    return zoo[picks] + sigma * torch.randn(count, zoo.shape[1], generator=g)


def interpolated_members(zoo: torch.Tensor, count: int, weight: float, seed: int) -> torch.Tensor:
    """(1 - weight) * a + weight * b for random pairs a != b of aligned zoo members."""
    g = torch.Generator().manual_seed(seed)
    first = torch.randint(len(zoo), (count,), generator=g)
    second = (first + torch.randint(1, len(zoo), (count,), generator=g)) % len(zoo)
    return (1 - weight) * zoo[first] + weight * zoo[second]


def gaussian_codes(codes: torch.Tensor, count: int, seed: int) -> torch.Tensor:
    """Samples of a full-covariance Gaussian fitted to codes (K, d) -> (count, d).

    Decode them with the generator's encoder for the "Gaussian in PCA space" baseline.
    """
    g = torch.Generator().manual_seed(seed)
    mean = codes.double().mean(0)
    centered = codes.double() - mean
    covariance = centered.T @ centered / max(len(codes) - 1, 1)
    eigenvalues, eigenvectors = torch.linalg.eigh(covariance)
    factor = eigenvectors * eigenvalues.clamp_min(0).sqrt()
    noise = torch.randn(count, codes.shape[1], generator=g, dtype=torch.float64)
    return (mean + noise @ factor.T).float()

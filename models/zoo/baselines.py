"""Trivial weight generators that any learned generator must beat.

All work on canonical (aligned) flat weights zoo (K, D) and return (M, D); the pairwise-aligned
interpolation also needs the architecture's permutation spec and stacked state dicts.
Each takes a seed: the same seed picks the same members and the same noise directions at every
strength, so a sweep over strengths moves the same networks further.
"""

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from models.canon import PermutationSpec, apply_member_permutations, match_stacked
from models.weightspace import WeightLayout


def parent_indices(size: int, count: int, seed: int) -> torch.Tensor:
    """(count,) the zoo members (of `size`) that `noisy_members` and `fisher_noisy_members` perturb
    with this seed (REPAIR of a noisy member needs its parent)."""
    return torch.randint(size, (count,), generator=torch.Generator().manual_seed(seed))


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


def fisher_noise_scale(fisher: torch.Tensor, damping: float = 1e-3) -> torch.Tensor:
    """Per-coordinate noise scale 1 / sqrt(F + damping * mean(F)) of diagonal Fishers (K, D) -> (K, D),
    each row normalized to root-mean-square 1 (so a ratio means the same distance as isotropic
    noise). The damping, relative to each network's mean Fisher, bounds the scale where F is 0
    (e.g. weights into dead units)."""
    f = fisher.double()
    scale = (f + damping * f.mean(1, keepdim=True)).rsqrt()
    return (scale / scale.square().mean(1, keepdim=True).sqrt()).float()


def fisher_noisy_members(
    zoo: torch.Tensor, scale: torch.Tensor, count: int, ratio: float, zoo_loo_median: float, seed: int
) -> torch.Tensor:
    """A random zoo member plus Gaussian noise shaped by its `fisher_noise_scale` row (K, D): larger
    along low-Fisher directions. Same picks and draws as `noisy_members` with the same seed, and
    the same expected distance ~ ratio * zoo_loo_median from the parent."""
    g = torch.Generator().manual_seed(seed)
    picks = torch.randint(len(zoo), (count,), generator=g)
    sigma = ratio * zoo_loo_median / zoo.shape[1] ** 0.5
    return zoo[picks] + sigma * scale[picks] * torch.randn(count, zoo.shape[1], generator=g)


@dataclass(frozen=True)
class AlignedPairs:
    """Pairs of distinct zoo members, the second weight-matched to the first (Git Re-Basin)."""

    first: torch.Tensor  # (M,) zoo indices
    second: torch.Tensor  # (M,) zoo indices, != first
    a: torch.Tensor  # (M, D) flat weights of the first members
    b: torch.Tensor  # (M, D) flat weights of the second members, permuted onto the first

    def interpolate(self, weight: float) -> torch.Tensor:
        """(1 - weight) * a + weight * b -> (M, D)."""
        return (1 - weight) * self.a + weight * self.b


def pairwise_aligned_pairs(
    spec: PermutationSpec,
    layout: WeightLayout,
    zoo: Mapping[str, torch.Tensor],
    count: int,
    seed: int,
) -> AlignedPairs:
    """`count` random pairs a != b of the stacked zoo (K, ...) (the same pairs as
    `interpolated_members` with this seed), with b matched to a by weight matching
    (models.canon.match_stacked: all second members of one first member in one call).

    The template-aligned zoo interpolates worse than pairs matched to each other: a template
    is a compromise for all members, a pairwise match is the best for these two."""
    size = next(iter(zoo.values())).shape[0]
    g = torch.Generator().manual_seed(seed)
    first = torch.randint(size, (count,), generator=g)
    second = (first + torch.randint(1, size, (count,), generator=g)) % size
    flat = layout.flatten_stacked(zoo).float()
    aligned = torch.empty(count, flat.shape[1])
    for member in first.unique().tolist():
        rows = (first == member).nonzero().flatten()
        template = {key: value[member] for key, value in zoo.items()}
        sources = {key: value[second[rows]] for key, value in zoo.items()}
        perms = [r.permutations for r in match_stacked(spec, template, sources, seed)]
        aligned[rows] = layout.flatten_stacked(apply_member_permutations(spec, perms, sources)).float()
    return AlignedPairs(first, second, flat[first], aligned)


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

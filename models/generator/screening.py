"""Screening: keep a candidate network only if it is as accurate as the zoo on training images.

Rejection sampling, no weight changes: candidates are drawn in blocks of SCREENING_BLOCK at
fixed stream offsets, so each one is computed alike whatever the count (a smaller request is
an exact prefix of a larger one). The validation and test splits stay unseen.
"""

import math
from dataclasses import dataclass

import torch

from contract.card import ScreeningEntry
from models.generator.decoding import NetworkDecoder
from models.generator.sampling import Candidates, Progress
from models.weightspace import ensemble_size
from models.zoo.datasets import Split

# Candidates scored together; it divides models.flow.samplers.BLOCK_ROWS, so a block never
# straddles two ODE blocks.
SCREENING_BLOCK = 8


@dataclass(frozen=True)
class ScreeningCounts:
    candidates: int  # drawn
    accepted: int  # reached the threshold
    filled: int  # networks filled with the best rejected candidates


@dataclass(frozen=True)
class Screening:
    """Keep a candidate only if its accuracy on the artifact's `images` training images reaches
    `threshold`: the `quantile` of the zoo members' own accuracy on those images."""

    images: int
    quantile: float
    threshold: float  # accuracy in [0, 1]
    max_candidates: float  # candidates drawn per requested network at most
    early_images: int = 0  # first-stage images (0: one stage)
    early_threshold: float = 0.0  # the zoo members' lowest accuracy on them
    subset: tuple[int, ...] | None = None  # the images scored (those a zoo member is unsure of); None: all

    def __post_init__(self) -> None:
        if self.images < 1 or not 0 <= self.quantile <= 1 or self.max_candidates < 1:
            raise ValueError(f"screening needs images >= 1, 0 <= quantile <= 1, max_candidates >= 1: {self}")
        scored = self.images if self.subset is None else len(self.subset)
        if not 0 <= self.early_images < scored:
            raise ValueError(f"screening needs 0 <= early_images < the images scored: {self}")
        if self.subset is not None and not all(0 <= i < self.images for i in self.subset):
            raise ValueError(f"screening subset indices must lie in 0..{self.images - 1}")

    def limit(self, count: int) -> int:
        """Candidates drawn at most for `count` networks: max_candidates * count in whole blocks."""
        return math.ceil(self.max_candidates * count / SCREENING_BLOCK) * SCREENING_BLOCK

    @classmethod
    def from_entry(cls, entry: ScreeningEntry | None) -> "Screening | None":
        if entry is None:
            return None
        fields = entry.model_dump()
        return cls(**fields | {"subset": None if entry.subset is None else tuple(entry.subset)})

    def scored_batch(self, decoder: NetworkDecoder) -> Split:
        """The screening images scored: the decoder's screening batch, or its `subset`."""
        batch = decoder.batches.screening
        if self.subset is None:
            return batch
        index = torch.tensor(self.subset, device=batch.labels.device)
        return Split(batch.images[index], batch.labels[index])

    def screen(
        self,
        candidates: Candidates,
        count: int,
        decoder: NetworkDecoder,
        progress: Progress | None = None,
    ) -> tuple[dict[str, torch.Tensor], ScreeningCounts]:
        """The first `count` candidates, in stream order, whose accuracy on the decoder's screening
        batch reaches the threshold, as a finished stacked state dict (count, ...).

        At most `limit(count)` are drawn; if too few pass, the most accurate rejected ones fill
        the rest. `progress(accepted, count)` after every block.
        """
        limit = self.limit(count)
        kept: list[dict[str, torch.Tensor]] = []
        # rejected candidates, in stream order; pruned now and then to the best that could still
        # be needed (count - accepted), which always holds the best `filled` of them all
        spare: list[dict[str, torch.Tensor]] = []
        spare_score: list[torch.Tensor] = []
        drawn = accepted = 0
        batch = self.scored_batch(decoder)
        while accepted < count and drawn < limit:
            state = decoder.networks(candidates(drawn, SCREENING_BLOCK))
            score, scored = self.scores(state, decoder, batch)
            passed = scored & (score >= self.threshold)
            kept.append(rows(state, passed.nonzero().flatten()[: count - accepted]))
            accepted += len(kept[-1][next(iter(state))])
            rejected = (~passed).nonzero().flatten()
            spare.append(rows(state, rejected))
            spare_score.append(score[rejected])
            if sum(map(len, spare_score)) > 2 * (count - accepted) + SCREENING_BLOCK:
                spare, spare_score = best_rows(spare, spare_score, count - accepted)
            drawn += SCREENING_BLOCK
            if progress is not None:
                progress(accepted, count)
        filled = count - accepted
        if filled:
            kept.extend(best_rows(spare, spare_score, filled)[0])
        return concat(kept), ScreeningCounts(drawn, accepted, filled)

    def scores(
        self, state: dict[str, torch.Tensor], decoder: NetworkDecoder, batch: Split
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Accuracy (count,) of finished candidates on the screening images `batch` (scored_batch),
        and (count,) bool: True where that covers all of them (False: rejected at the first stage,
        accuracy on its images)."""
        if not self.early_images:
            return decoder.accuracy(state, batch), torch.ones(ensemble_size(state), dtype=torch.bool)
        head = Split(batch.images[: self.early_images], batch.labels[: self.early_images])
        early = decoder.correct(state, head)
        score = early / self.early_images
        scored = score >= self.early_threshold
        if scored.any():
            index = scored.nonzero().flatten()
            tail = Split(batch.images[self.early_images :], batch.labels[self.early_images :])
            score[index] = (early[index] + decoder.correct(rows(state, index), tail)) / len(batch)
        return score, scored


def rows(state: dict[str, torch.Tensor], index: torch.Tensor) -> dict[str, torch.Tensor]:
    """Rows `index` of every tensor of a stacked state dict."""
    return {key: value[index.to(value.device)] for key, value in state.items()}


def best_rows(
    states: list[dict[str, torch.Tensor]], scores: list[torch.Tensor], n: int
) -> tuple[list[dict[str, torch.Tensor]], list[torch.Tensor]]:
    """The `n` highest-scoring rows of stacked state dicts and their scores (ties: the earlier row)."""
    score = torch.cat(scores)
    best = score.argsort(descending=True, stable=True)[:n]
    return [rows(concat(states), best)], [score[best]]


def concat(states: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Stacked state dicts joined along the network axis."""
    return {key: torch.cat([state[key] for state in states]) for key in states[0]}

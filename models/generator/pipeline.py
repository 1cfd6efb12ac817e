"""A loaded generator: sample codes, decode them into ready networks, check them.

noise (count, d) --ODE--> codes (count, d) --encoder.decode--> flat weights (count, D)
  --+ residual noise (optional, isotropic)--> --layout--> stacked state dict
  --BatchNorm recalibration--> candidate networks
  --screening (optional): keep those as accurate as the zoo on training images--> networks
  --validation batch--> per-network accuracy
"""

import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from models.architectures import Architecture, get_architecture
from models.data_batches import DataBatches, unpack_batches
from models.flow import WeightEncoder, generate_codes, load_velocity, noise_rows
from models.flow.samplers import BLOCK_ROWS
from models.store import ArtifactError, discover_generators, read_card
from models.weightspace import WeightLayout, batched_evaluate, check_state_dict, recalibrate_batchnorm

__all__ = [
    "GeneratedEnsemble",
    "Generator",
    "Screening",
    "discover_generators",
    "residual_noise",
    "write_result",
]

RESIDUAL_STREAM = 1  # noise_rows stream of the residual noise (the ODE's noise is stream 0)
# Candidates scored together when screening, at fixed stream offsets (see Generator.screen);
# it divides BLOCK_ROWS, so a block never straddles two ODE blocks.
SCREENING_BLOCK = 8
Candidates = Callable[[int, int], torch.Tensor]  # (start, n) -> flat weights (n, D) of candidates start..


def residual_noise(count: int, dim: int, seed: int, sigma: float, start: int = 0) -> torch.Tensor:
    """sigma * N(0, I) rows (count, dim): rows start.. of the seed's residual stream (row i: (seed, i))."""
    return noise_rows(count, dim, seed, start, stream=RESIDUAL_STREAM).mul_(sigma)


@dataclass(frozen=True)
class Screening:
    """Keep a candidate network only if its accuracy on the artifact's training images reaches
    `threshold`: the `quantile` of the zoo members' own accuracy on those images."""

    images: int  # training images each candidate is scored on
    quantile: float
    threshold: float  # accuracy in [0, 1]
    max_candidates: float  # candidates drawn per requested network at most

    def __post_init__(self) -> None:
        if self.images < 1 or not 0 <= self.quantile <= 1 or self.max_candidates < 1:
            raise ValueError(f"screening needs images >= 1, 0 <= quantile <= 1, max_candidates >= 1: {self}")

    def limit(self, count: int) -> int:
        """Candidates drawn at most for `count` networks: max_candidates * count in whole blocks."""
        return math.ceil(self.max_candidates * count / SCREENING_BLOCK) * SCREENING_BLOCK

    @classmethod
    def from_card(cls, card: dict[str, Any]) -> "Screening | None":
        entry = card["sampler"].get("screening")
        return None if not entry else cls(**entry)


@dataclass
class GeneratedEnsemble:
    state: dict[
        str, torch.Tensor
    ]  # stacked state dict, every tensor (count, ...) on CPU (float32; int64 BN counters)
    val_accuracy: torch.Tensor | None  # (count,) in [0, 1] on the artifact's validation batch
    metadata: dict[str, str]  # architecture, generator_version, count, seed, sampler, steps, screening counts


class Generator:
    """Everything needed to sample one architecture's networks, loaded once."""

    def __init__(
        self,
        directory: Path,
        card: dict[str, Any],
        architecture: Architecture,
        template: dict[str, torch.Tensor],
        encoder: WeightEncoder,
        flow: torch.nn.Module,
        batches: DataBatches,
        device: torch.device,
    ):
        self.directory = directory
        self.name = card["name"]
        self.card = card
        self.architecture = architecture
        self.template = template
        self.encoder = encoder
        self.flow = flow
        self.batches = batches.to(device)
        self.device = device
        self.module = architecture.build().to(device)
        self.layout = WeightLayout.from_module(self.module)
        sampler = card["sampler"]
        # sigma per coordinate of the optional residual noise (see GeneratorRecipe.residual_noise)
        ratio, spread = sampler.get("residual_noise", 0.0), sampler.get("zoo_spread", 0.0)
        self.residual_sigma = ratio * spread / self.layout.dim**0.5
        self.screening = Screening.from_card(card)

    @classmethod
    def load(cls, directory: Path, device: str | None = None) -> "Generator":
        """Load and verify an artifact folder; CUDA when present unless `device` says otherwise."""
        directory = Path(directory)
        card = read_card(directory)
        target = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        try:
            architecture = get_architecture(card["architecture"]["name"])
            template = load_file(str(directory / "template.safetensors"))
            check_state_dict(template, architecture.build().state_dict())
            encoder = WeightEncoder.load(directory / "encoder.safetensors").to(target)
            flow = load_velocity(directory / "flow.safetensors", device=target)
            screening = Screening.from_card(card)
            batches = unpack_batches(
                load_file(str(directory / "calibration.safetensors")),
                calibration_size=card["recipe"]["calibration_size"],
                screening_size=0 if screening is None else screening.images,
            )
        except (KeyError, TypeError, ValueError, OSError, SafetensorError) as error:
            raise ArtifactError(
                f"generator artifact {directory} is unusable ({type(error).__name__}: {error}); "
                f"rebuild it with `make generators` or restore the folder {directory}"
            ) from error
        return cls(directory, card, architecture, template, encoder, flow, batches, target)

    def assemble(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """Flat parameters (count, D) -> stacked state dict (count, ...) on the generator's device.

        Buffers (BatchNorm statistics) are copied from the template, to be recalibrated by `finish`.
        """
        params = self.layout.unflatten_stacked(flat.to(self.device))
        return {
            key: params[key].contiguous()
            if key in params
            else value.to(self.device).expand(len(flat), *value.shape).clone()
            for key, value in self.template.items()
        }

    def decode(self, codes: torch.Tensor) -> dict[str, torch.Tensor]:
        """codes (count, d) -> stacked state dict (count, ...), BatchNorm not yet recalibrated."""
        return self.assemble(self.encoder.decode(codes.to(self.device)))

    def finish(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Recalibrate BatchNorm statistics on the artifact's calibration images (training data)."""
        return recalibrate_batchnorm(self.module, state, self.batches.calibration)

    def validation_accuracy(self, state: dict[str, torch.Tensor]) -> torch.Tensor:
        """(count,) accuracy on the held-out validation batch."""
        validation = self.batches.validation
        return batched_evaluate(self.module, state, validation.images, validation.labels)[1]

    def screening_accuracy(self, state: dict[str, torch.Tensor]) -> torch.Tensor:
        """(count,) accuracy on the artifact's screening images (training split)."""
        screening = self.batches.screening
        return batched_evaluate(self.module, state, screening.images, screening.labels)[1]

    def sample_flat(
        self,
        count: int,
        seed: int,
        sampler: str | None = None,
        steps: int | None = None,
        progress: Callable[[int, int], None] | None = None,
        chunk_size: int = 256,
        residual: bool = True,
        start: int = 0,
    ) -> torch.Tensor:
        """Flat weights (count, D) on the generator's device of candidates start.. of the seed's
        stream: the flow's decoded samples, plus the artifact's residual noise unless `residual`
        is False. Candidate i depends only on (seed, i)."""
        if count < 1:
            raise ValueError(f"count must be at least 1, got {count}")
        codes = generate_codes(
            self.flow,
            count,
            self.encoder.code_dim,
            seed,
            method=sampler or self.card["sampler"]["method"],
            steps=steps or self.card["sampler"]["steps"],
            chunk_size=chunk_size,
            progress=progress,
            start=start,
        )
        return self.decode_flat(codes, seed, start, residual)

    def decode_flat(self, codes: torch.Tensor, seed: int, start: int, residual: bool = True) -> torch.Tensor:
        """Codes (n, d) of candidates start.. of the seed's stream -> flat weights (n, D), plus the
        residual noise of those candidates unless `residual` is False."""
        flat = self.encoder.decode(codes.to(self.device))
        if residual and self.residual_sigma > 0:
            noise = residual_noise(len(codes), flat.shape[1], seed, self.residual_sigma, start)
            flat = flat + noise.to(self.device)
        return flat

    def candidate_stream(self, seed: int, sampler: str, steps: int) -> Candidates:
        """candidates(start, n) for `screen`: the ODE runs on whole BLOCK_ROWS-aligned blocks of the
        stream (the last one kept), decoding takes the SCREENING_BLOCK rows asked for."""
        cached: dict[int, torch.Tensor] = {}

        def candidates(start: int, n: int) -> torch.Tensor:
            block = start - start % BLOCK_ROWS
            if block not in cached:
                cached.clear()
                cached[block] = generate_codes(
                    self.flow, BLOCK_ROWS, self.encoder.code_dim, seed, sampler, steps, start=block
                )
            return self.decode_flat(cached[block][start - block : start - block + n], seed, start)

        return candidates

    def screen(
        self, candidates: Candidates, count: int, progress: Callable[[int, int], None] | None = None
    ) -> tuple[dict[str, torch.Tensor], dict[str, int]]:
        """The first `count` candidates, in stream order, whose screening accuracy reaches the
        threshold, as a finished stacked state dict (count, ...), and the counts drawn / filled.

        Candidates are drawn in blocks of SCREENING_BLOCK at fixed stream offsets, so each one is
        computed alike whatever the count (a smaller request is an exact prefix of a larger one).
        At most `Screening.limit(count)` are drawn; if too few pass, the most accurate rejected
        ones fill the rest (`filled` says how many).
        """
        if self.screening is None:
            raise ValueError(f"generator {self.name} has no screening in its card")
        limit = self.screening.limit(count)
        kept: list[dict[str, torch.Tensor]] = []
        spare: dict[str, torch.Tensor] | None = None  # the best rejected so far, at most `count`
        spare_score = torch.empty(0)
        drawn = accepted = 0
        while accepted < count and drawn < limit:
            block = SCREENING_BLOCK
            state = self.finish(self.assemble(candidates(drawn, block)))
            score = self.screening_accuracy(state).cpu()
            passed = score >= self.screening.threshold
            kept.append(_rows(state, passed.nonzero().flatten()[: count - accepted]))
            accepted += len(kept[-1][next(iter(state))])
            spare = _concat([s for s in (spare, _rows(state, (~passed).nonzero().flatten())) if s])
            spare_score = torch.cat([spare_score, score[~passed]])
            best = spare_score.argsort(descending=True, stable=True)[:count]
            spare, spare_score = _rows(spare, best), spare_score[best]
            drawn += block
            if progress is not None:
                progress(accepted, count)
        filled = count - accepted
        if filled:
            kept.append(_rows(spare, torch.arange(filled)))
        return _concat(kept), {"candidates": drawn, "accepted": accepted, "filled": filled}

    def generate(
        self,
        count: int,
        seed: int,
        sampler: str | None = None,
        steps: int | None = None,
        progress: Callable[[int, int], None] | None = None,
        evaluate: bool = True,
        chunk_size: int = 256,
        screen: bool = True,
    ) -> GeneratedEnsemble:
        """`count` new networks from `seed` (bit-identical for the same arguments on CPU),
        screened when the card says so and `screen` is True."""
        if count < 1:
            raise ValueError(f"count must be at least 1, got {count}")
        method = sampler or self.card["sampler"]["method"]
        n_steps = steps or self.card["sampler"]["steps"]
        metadata = {
            "architecture": self.architecture.name,
            "generator_version": str(self.card["version"]),
            "count": str(count),
            "seed": str(seed),
            "sampler": method,
            "steps": str(n_steps),
        }
        if screen and self.screening is not None:
            candidates = self.candidate_stream(seed, method, n_steps)
            state, counts = self.screen(candidates, count, progress)
            metadata.update({f"screening_{key}": str(value) for key, value in counts.items()})
        else:
            flat = self.sample_flat(count, seed, method, n_steps, progress, chunk_size)
            state = self.finish(self.assemble(flat))
        accuracy = self.validation_accuracy(state) if evaluate else None
        cpu_state = {
            k: v.detach().float().cpu().contiguous() if v.is_floating_point() else v.cpu().contiguous()
            for k, v in state.items()
        }
        return GeneratedEnsemble(cpu_state, None if accuracy is None else accuracy.cpu(), metadata)


def _rows(state: dict[str, torch.Tensor], index: torch.Tensor) -> dict[str, torch.Tensor]:
    """Rows `index` of every tensor of a stacked state dict."""
    return {key: value[index.to(value.device)] for key, value in state.items()}


def _concat(states: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Stacked state dicts joined along the network axis."""
    return {key: torch.cat([state[key] for state in states]) for key in states[0]}


def write_result(
    path: Path, ensemble: GeneratedEnsemble, extra_metadata: dict[str, str] | None = None
) -> None:
    """Write a job result (DESIGN.md section 4) atomically: temporary file, then rename.

    A failed write (directory missing or read-only, disk full) raises OSError.
    """
    path = Path(path)
    metadata = {"format": "pt", **ensemble.metadata, **(extra_metadata or {})}
    if ensemble.val_accuracy is not None:
        metadata["val_accuracy"] = json.dumps([round(a, 6) for a in ensemble.val_accuracy.tolist()])
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        save_file(ensemble.state, str(temporary), metadata=metadata)
        os.replace(temporary, path)
    except SafetensorError as error:  # how safetensors reports a failed write
        raise OSError(f"cannot write {path}: {error}") from error
    finally:
        temporary.unlink(missing_ok=True)

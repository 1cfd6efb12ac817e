"""A loaded generator: sample codes, decode them into ready networks, check them.

noise (count, d) --ODE--> codes (count, d) --encoder.decode--> flat weights (count, D)
  --+ residual noise (optional, isotropic)--> --layout--> stacked state dict
  --BatchNorm recalibration--> networks
  --validation batch--> per-network accuracy
"""

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from models.architectures import Architecture, get_architecture
from models.flow import WeightEncoder, generate_codes, load_velocity
from models.store import ArtifactError, discover_generators, read_card
from models.weightspace import WeightLayout, batched_evaluate, check_state_dict, recalibrate_batchnorm

__all__ = ["GeneratedEnsemble", "Generator", "discover_generators", "residual_noise", "write_result"]

RESIDUAL_SEED_OFFSET = 2**32  # residual noise seeds lie above every job seed, apart from the ODE's noise


def residual_noise(count: int, dim: int, seed: int, sigma: float) -> torch.Tensor:
    """sigma * N(0, I) rows (count, dim); row i depends only on (seed, i), as the ODE's noise does."""
    generator = torch.Generator().manual_seed(RESIDUAL_SEED_OFFSET + seed)
    rows = torch.empty(count, dim)
    for row in rows:
        row.copy_(torch.randn(dim, generator=generator))
    return rows.mul_(sigma)


@dataclass
class GeneratedEnsemble:
    state: dict[
        str, torch.Tensor
    ]  # stacked state dict, every tensor (count, ...) on CPU (float32; int64 BN counters)
    val_accuracy: torch.Tensor | None  # (count,) in [0, 1] on the artifact's validation batch
    metadata: dict[str, str]  # architecture, generator_version, count, seed, sampler, steps


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
        calibration: dict[str, torch.Tensor],
        device: torch.device,
    ):
        self.directory = directory
        self.name = card["name"]
        self.card = card
        self.architecture = architecture
        self.template = template
        self.encoder = encoder
        self.flow = flow
        self.calibration = calibration
        self.device = device
        self.module = architecture.build().to(device)
        self.layout = WeightLayout.from_module(self.module)
        sampler = card["sampler"]
        # sigma per coordinate of the optional residual noise (see GeneratorRecipe.residual_noise)
        ratio, spread = sampler.get("residual_noise", 0.0), sampler.get("zoo_spread", 0.0)
        self.residual_sigma = ratio * spread / self.layout.dim**0.5

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
            calibration = load_file(str(directory / "calibration.safetensors"))
        except (KeyError, ValueError, OSError, SafetensorError) as error:
            raise ArtifactError(
                f"generator artifact {directory} is unusable ({type(error).__name__}: {error}); "
                f"rebuild it with `make generators` or restore the folder {directory}"
            ) from error
        return cls(directory, card, architecture, template, encoder, flow, calibration, target)

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
        images = self.calibration["calibration_images"].to(self.device, torch.float32)
        return recalibrate_batchnorm(self.module, state, images)

    def validation_accuracy(self, state: dict[str, torch.Tensor]) -> torch.Tensor:
        """(count,) accuracy on the held-out validation batch."""
        images = self.calibration["val_images"].to(self.device, torch.float32)
        labels = self.calibration["val_labels"].to(self.device)
        return batched_evaluate(self.module, state, images, labels)[1]

    def sample_flat(
        self,
        count: int,
        seed: int,
        sampler: str | None = None,
        steps: int | None = None,
        progress: Callable[[int, int], None] | None = None,
        chunk_size: int = 256,
        residual: bool = True,
    ) -> torch.Tensor:
        """Flat weights (count, D) on the generator's device: the flow's decoded samples, plus the
        artifact's residual noise unless `residual` is False."""
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
        )
        flat = self.encoder.decode(codes.to(self.device))
        if residual and self.residual_sigma > 0:
            flat = flat + residual_noise(count, flat.shape[1], seed, self.residual_sigma).to(self.device)
        return flat

    def generate(
        self,
        count: int,
        seed: int,
        sampler: str | None = None,
        steps: int | None = None,
        progress: Callable[[int, int], None] | None = None,
        evaluate: bool = True,
        chunk_size: int = 256,
    ) -> GeneratedEnsemble:
        """`count` new networks from `seed` (bit-identical for the same arguments on CPU)."""
        method = sampler or self.card["sampler"]["method"]
        n_steps = steps or self.card["sampler"]["steps"]
        flat = self.sample_flat(count, seed, method, n_steps, progress, chunk_size)
        state = self.finish(self.assemble(flat))
        accuracy = self.validation_accuracy(state) if evaluate else None
        metadata = {
            "architecture": self.architecture.name,
            "generator_version": str(self.card["version"]),
            "count": str(count),
            "seed": str(seed),
            "sampler": method,
            "steps": str(n_steps),
        }
        cpu_state = {
            k: v.detach().float().cpu().contiguous() if v.is_floating_point() else v.cpu().contiguous()
            for k, v in state.items()
        }
        return GeneratedEnsemble(cpu_state, None if accuracy is None else accuracy.cpu(), metadata)


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

"""A loaded generator: the one public pipeline from a request to ready networks.

noise (count, d) --ODE--> codes --encoder.decode--> flat weights (count, D)   [sampling]
  --+ residual noise (optional, isotropic)-->
  --layout--> stacked state dict --BatchNorm recalibration--> candidates      [decoding]
  --keep those as accurate as the zoo on training images (optional)-->       [screening]
  --validation batch--> per-network accuracy (optional)
The worker, the CLI, the evaluation and the benchmarks all call `Generator.generate`.
"""

from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from contract.card import CardStamp, GeneratorCard, card_stamp
from contract.result_file import ResultMetadata
from models.architectures import Architecture, get_architecture
from models.flow import WeightEncoder, load_velocity
from models.generator.artifact import ArtifactError, read_card
from models.generator.data_batches import unpack_batches
from models.generator.decoding import NetworkDecoder
from models.generator.result import GeneratedEnsemble
from models.generator.sampling import CandidateSampler, Progress
from models.generator.screening import Screening
from models.weightspace import check_state_dict

LOAD_ATTEMPTS = 5  # loads that overlap a replacement of the folder before giving up


@dataclass
class Generator:
    """Everything needed to sample one architecture's networks, loaded once."""

    directory: Path
    card: GeneratorCard
    architecture: Architecture
    sampler: CandidateSampler  # codes -> flat candidate weights
    decoder: NetworkDecoder  # flat weights -> finished networks
    screening: Screening | None  # which candidates are kept
    stamp: CardStamp | None = None  # the version of the folder it was loaded from (contract.card)

    @property
    def name(self) -> str:
        return self.card.name

    @property
    def device(self) -> torch.device:
        return self.decoder.device

    @classmethod
    def load(cls, directory: Path, device: str | None = None) -> "Generator":
        """Load and verify an artifact folder; CUDA when present unless `device` says otherwise.

        The generator comes from one published version of the folder: its card's stamp is taken
        before and after reading the files, and a load that overlapped a replacement (the stamps
        differ) is repeated, so a new card never meets an old flow. `stamp` records that version.
        """
        directory = Path(directory)
        for _ in range(LOAD_ATTEMPTS):
            before = card_stamp(directory)
            try:
                generator = cls.read(directory, device)
            except ArtifactError:
                if card_stamp(directory) == before:
                    raise
                continue
            if card_stamp(directory) == before:
                generator.stamp = before
                return generator
        raise ArtifactError(
            f"generator artifact {directory} was replaced while it was being loaded, {LOAD_ATTEMPTS} times "
            "running; load it again once it is no longer being rewritten"
        )

    @classmethod
    def read(cls, directory: Path, device: str | None = None) -> "Generator":
        """Read the artifact's files as they are now (see `load`, which makes them one version)."""
        card = read_card(directory)
        target = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        try:
            architecture = get_architecture(card.architecture.name)
            template = load_file(str(directory / "template.safetensors"))
            check_state_dict(template, architecture.build().state_dict())
            encoder = WeightEncoder.load(directory / "encoder.safetensors").to(target)
            flow = load_velocity(directory / "flow.safetensors", device=target)
            screening = Screening.from_entry(card.sampler.screening)
            batches = unpack_batches(
                load_file(str(directory / "calibration.safetensors")),
                calibration_size=card.recipe["data"]["calibration_size"],
                screening_size=0 if screening is None else screening.images,
            )
        except (KeyError, TypeError, ValueError, OSError, SafetensorError) as error:
            raise ArtifactError(
                f"generator artifact {directory} is unusable ({type(error).__name__}: {error}); "
                f"rebuild it with `make generators` or restore the folder {directory}"
            ) from error
        decoder = NetworkDecoder(architecture, template, batches, target)
        # sigma per coordinate of the optional residual noise (see SamplingRecipe.residual_noise)
        sigma = card.sampler.residual_noise * card.sampler.zoo_spread / decoder.layout.dim**0.5
        return cls(directory, card, architecture, CandidateSampler(flow, encoder, sigma), decoder, screening)

    def generate(
        self,
        count: int,
        seed: int,
        sampler: str | None = None,
        steps: int | None = None,
        progress: Progress | None = None,
        evaluate: bool = True,
        chunk_size: int = 256,
        screen: bool = True,
    ) -> GeneratedEnsemble:
        """`count` new networks from `seed` (bit-identical for the same arguments on CPU),
        screened when the card says so and `screen` is True; `evaluate` measures each one's
        accuracy on the artifact's validation batch."""
        if count < 1:
            raise ValueError(f"count must be at least 1, got {count}")
        method = sampler or self.card.sampler.method
        n_steps = steps or self.card.sampler.steps
        counts = None
        if screen and self.screening is not None:
            candidates = self.sampler.stream(seed, method, n_steps)
            state, counts = self.screening.screen(candidates, count, self.decoder, progress)
        else:
            flat = self.sampler.sample(count, seed, method, n_steps, progress, chunk_size)
            state = self.decoder.networks(flat)
        accuracy = self.decoder.accuracy(state, self.decoder.batches.validation) if evaluate else None
        metadata = ResultMetadata(
            architecture=self.architecture.name,
            generator_version=str(self.card.version),
            count=count,
            seed=seed,
            sampler=method,
            steps=n_steps,
            val_accuracy=None if accuracy is None else accuracy.cpu().tolist(),
            screening_candidates=None if counts is None else counts.candidates,
            screening_accepted=None if counts is None else counts.accepted,
            screening_filled=None if counts is None else counts.filled,
            input_contract=self.card.input,
        )
        cpu_state = {
            k: v.detach().float().cpu().contiguous() if v.is_floating_point() else v.cpu().contiguous()
            for k, v in state.items()
        }
        return GeneratedEnsemble(cpu_state, metadata)

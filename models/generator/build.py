"""Build a generator artifact from a canonical zoo: fit the encoder, train the flow, write the folder.

canonical zoo (K networks, aligned to a template)
  -> flat parameters (K, D) -> WeightEncoder (standardize + PCA) -> codes (K, d)
  -> train_flow -> velocity network
  -> artifact: card.json + template / encoder / flow / calibration safetensors
"""

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import save_file

from models.architectures import Architecture
from models.data_batches import pack_batches, unpack_batches
from models.flow import (
    EncoderConfig,
    FlowTrainConfig,
    VelocityConfig,
    WeightEncoder,
    save_velocity,
    train_flow,
)
from models.store import write_artifact
from models.weightspace import WeightLayout, batched_evaluate, recalibrate_batchnorm
from models.zoo.datasets import Dataset

if TYPE_CHECKING:
    from models.zoo.canonical import CanonicalZoo


@dataclass(frozen=True)
class GeneratorRecipe:
    """Everything that decides a generator besides its zoo."""

    n_components: int | None = (
        99  # PCA dimension, capped at K - 1 (lossless on a K-member zoo); None = no PCA
    )
    whiten: str = "global"  # EncoderConfig.whiten
    components_dtype: str = "float32"  # "float16" halves the artifact
    hidden: int = 512  # velocity network width
    depth: int = 1  # residual bottleneck blocks
    dropout: float = 0.1
    train: FlowTrainConfig = field(default_factory=lambda: FlowTrainConfig(iterations=20_000, batch_size=64))
    sampler: str = "rk4"
    steps: int = 16
    # Isotropic Gaussian added to decoded weights (a PPCA-style observation noise), as a novelty
    # ratio: sigma = residual_noise * zoo spread / sqrt(D), zoo spread = the zoo's median
    # leave-one-out nearest-member L2 distance. 0 = the flow's samples alone.
    residual_noise: float = 0.0
    # Screening: keep a candidate only if its accuracy on `screening_size` training images reaches
    # the `screening_quantile` of the zoo members' own; at most `screening_max_candidates` drawn
    # per requested network. 0 images = off.
    screening_size: int = 0
    screening_quantile: float = 0.05
    screening_max_candidates: float = 4.0
    calibration_size: int = 512  # training images kept for BatchNorm recalibration
    validation_size: int = 1000  # validation images kept for per-network accuracy

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "train": asdict(self.train)}

    def flow_fields(self) -> dict[str, Any]:
        """The fields that decide the encoder and the flow (the rest only decide sampling)."""
        sampling = {"sampler", "steps", "residual_noise", "calibration_size", "validation_size"}
        return {
            k: v for k, v in self.to_dict().items() if k not in sampling and not k.startswith("screening")
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "GeneratorRecipe":
        return cls(**{**data, "train": FlowTrainConfig(**data["train"])})


def fit_flow(
    canonical: dict[str, torch.Tensor],
    architecture: Architecture,
    recipe: GeneratorRecipe,
    progress: Callable[[int, int, float], None] | None = None,
) -> tuple[WeightEncoder, torch.nn.Module, list[float]]:
    """Encoder and trained velocity network (EMA weights) for a canonical stacked zoo (K, ...)."""
    layout = WeightLayout.from_module(architecture.build())
    weights = layout.flatten_stacked(canonical)
    # K centered members span at most K - 1 directions: more components add nothing, fewer lose accuracy.
    components = None if recipe.n_components is None else min(recipe.n_components, len(weights) - 1)
    encoder = WeightEncoder.fit(
        weights,
        layout,
        EncoderConfig(
            n_components=components, whiten=recipe.whiten, components_dtype=recipe.components_dtype
        ),
    )
    codes = encoder.encode(weights)
    velocity = VelocityConfig(
        dim=codes.shape[1], hidden=recipe.hidden, depth=recipe.depth, dropout=recipe.dropout
    )
    trained = train_flow(codes, recipe.train, velocity, progress=progress)
    return encoder, trained.model.cpu(), trained.history


def zoo_spread(canonical: dict[str, torch.Tensor], architecture: Architecture) -> float:
    """Median L2 distance from each member of a canonical stacked zoo (K, ...) to its nearest other member."""
    from models.zoo.novelty import nearest_distances

    weights = WeightLayout.from_module(architecture.build()).flatten_stacked(canonical)
    return nearest_distances(weights, weights, exclude_self=True).median().item()


def screening_entry(
    canonical: dict[str, torch.Tensor], architecture: Architecture, dataset: Dataset, recipe: GeneratorRecipe
) -> dict[str, Any] | None:
    """The card's `sampler.screening` (models.generator.Screening) for a canonical stacked zoo (K, ...):
    the threshold is the recipe's quantile of the members' screening accuracy, measured after the
    same BatchNorm recalibration a candidate gets. None when the recipe screens nothing."""
    if recipe.screening_size < 1:
        return None
    batches = unpack_batches(
        pack_batches(dataset, recipe.calibration_size, recipe.screening_size, 0),
        recipe.calibration_size,
        recipe.screening_size,
    )
    module = architecture.build()
    state = recalibrate_batchnorm(module, canonical, batches.calibration)
    accuracy = batched_evaluate(module, state, batches.screening.images, batches.screening.labels)[1]
    return {
        "images": recipe.screening_size,
        "quantile": recipe.screening_quantile,
        "threshold": torch.quantile(accuracy.double(), recipe.screening_quantile).item(),
        "max_candidates": recipe.screening_max_candidates,
    }


def write_generator(
    directory: Path,
    architecture: Architecture,
    template: dict[str, torch.Tensor],
    encoder: WeightEncoder,
    flow: torch.nn.Module,
    dataset: Dataset,
    recipe: GeneratorRecipe,
    spread: float,
    screening: dict[str, Any] | None,
    card_extra: dict[str, Any],
) -> None:
    """Write the artifact folder atomically (models.store); `spread` is `zoo_spread` of the zoo,
    `screening` its `screening_entry`."""
    card = {
        "name": directory.name,
        "architecture": architecture.to_dict(),
        "parameter_count": WeightLayout.from_module(architecture.build()).dim,
        "dataset": {"name": dataset.name, "fingerprint": dataset.fingerprint},
        "recipe": recipe.to_dict(),
        "encoder": {"code_dim": encoder.code_dim, **asdict(encoder.config)},
        "sampler": {
            "method": recipe.sampler,
            "steps": recipe.steps,
            "residual_noise": recipe.residual_noise,
            "zoo_spread": spread,
            "screening": screening,
        },
        **card_extra,
    }
    writers = {
        "template.safetensors": lambda p: save_file({k: v.contiguous() for k, v in template.items()}, str(p)),
        "encoder.safetensors": encoder.save,
        "flow.safetensors": lambda p: save_velocity(flow, p),
        "calibration.safetensors": lambda p: save_file(
            pack_batches(dataset, recipe.calibration_size, recipe.screening_size, recipe.validation_size),
            str(p),
        ),
    }
    write_artifact(directory, card, writers)


def zoo_card(canonical: "CanonicalZoo") -> dict[str, Any]:
    """The card's `zoo` entry: size, template, training recipe, content hash, test accuracy (%)."""
    zoo = canonical.zoo
    test_acc = zoo.metric("test_acc") * 100
    return {
        "size": zoo.size,
        "template": canonical.kind,
        "recipe": zoo.manifest.recipe,
        "content_hash": zoo.manifest.canonical["source_content_hash"],
        "test_accuracy": {
            "mean": test_acc.mean().item(),
            "std": test_acc.std().item(),
            "min": test_acc.min().item(),
            "max": test_acc.max().item(),
        },
    }


def build_from_zoo(
    zoo_dir: Path,
    out_dir: Path,
    recipe: GeneratorRecipe,
    template_kind: str | None = None,
    data_dir: str | None = None,
    progress: Callable[[int, int, float], None] | None = None,
    reuse_flow: bool = False,
) -> Path:
    """Canonical zoo folder -> generator artifact folder `out_dir` (plus `loss.png` beside the files).

    With `reuse_flow`, the encoder and flow of the artifact already at `out_dir` are kept (they
    must come from the same zoo and the same flow fields of the recipe): only the sampling
    settings and the data batches are written anew.
    """
    from models.flow.plotting import plot_loss_curve
    from models.zoo.canonical import load_canonical_zoo
    from models.zoo.datasets import load_dataset

    canonical = load_canonical_zoo(zoo_dir, template_kind)
    zoo, architecture = canonical.zoo, canonical.zoo.architecture
    dataset = load_dataset(architecture.dataset, data_dir)
    if reuse_flow:
        encoder, flow, flow_card, loss_png = reusable_flow(Path(out_dir), canonical, recipe)
    else:
        encoder, flow, history = fit_flow(zoo.stacked, architecture, recipe, progress)
        flow_card, loss_png = {"final_loss": sum(history[-100:]) / len(history[-100:])}, None
    extra = {"zoo": zoo_card(canonical), "flow": flow_card}
    spread = zoo_spread(zoo.stacked, architecture)
    screening = screening_entry(zoo.stacked, architecture, dataset, recipe)
    write_generator(
        Path(out_dir),
        architecture,
        canonical.template,
        encoder,
        flow,
        dataset,
        recipe,
        spread,
        screening,
        extra,
    )
    if loss_png is None:
        plot_loss_curve(history, Path(out_dir) / "loss.png")
    else:
        (Path(out_dir) / "loss.png").write_bytes(loss_png)
    return Path(out_dir)


def reusable_flow(
    directory: Path, canonical: "CanonicalZoo", recipe: GeneratorRecipe
) -> tuple[WeightEncoder, torch.nn.Module, dict[str, Any], bytes | None]:
    """The encoder, flow, card `flow` entry and loss curve of the artifact at `directory`, checked
    to come from this zoo and the recipe's flow fields (ValueError naming the fix otherwise)."""
    from models.flow import load_velocity
    from models.store import read_card

    card = read_card(directory)
    built = GeneratorRecipe.from_dict(card["recipe"]).flow_fields()
    if card["zoo"]["content_hash"] != zoo_card(canonical)["content_hash"] or built != recipe.flow_fields():
        raise ValueError(
            f"the flow in {directory} was trained on another zoo or with other flow settings "
            "than this build asks for; build without --reuse-flow to train a new one"
        )
    loss = directory / "loss.png"
    return (
        WeightEncoder.load(directory / "encoder.safetensors"),
        load_velocity(directory / "flow.safetensors", device="cpu"),
        card["flow"],
        loss.read_bytes() if loss.is_file() else None,
    )


# Shipped settings per architecture: the sweep's choice on the validation split
# (`python -m bench.generator_sweep`; README "Shipped generators").
GENERATOR_RECIPES: dict[str, GeneratorRecipe] = {
    # The default flow, residual noise, screening on 1,000 training images.
    "mlp-digits": GeneratorRecipe(residual_noise=0.10, screening_size=1000),
    # float16 PCA components keep the artifact under 30 MB (99 x 118,282 components);
    # 3x the default training; residual noise for novelty; screening on 2,500 training images
    # (uint8) fits the 30 MB budget beside the float16 components.
    "mlp-fashion": GeneratorRecipe(
        components_dtype="float16",
        train=FlowTrainConfig(iterations=60_000, batch_size=64),
        residual_noise=0.10,
        screening_size=2500,
    ),
    # The default flow on the 50-member zoo; residual noise lifts r from 0.03 to 0.13, screening
    # on 3,000 training images removes the tail of broken networks.
    "cnn-fashion": GeneratorRecipe(residual_noise=0.12, screening_size=3000),
}


def recipe_for(architecture: str) -> GeneratorRecipe:
    """The shipped recipe for `architecture`, or the generic default."""
    return GENERATOR_RECIPES.get(architecture, GeneratorRecipe())

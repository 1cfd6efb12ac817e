"""Build a generator artifact from a canonical zoo: fit the encoder, train the flow, write the folder.

canonical zoo (K networks, aligned to a template)
  -> flat parameters (K, D) -> WeightEncoder (standardize + PCA) -> codes (K, d)
  -> train_flow -> velocity network
  -> artifact: card.json + template / encoder / flow / calibration safetensors
"""

from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import save_file
from torch import nn

from contract.card import (
    AccuracyStats,
    ArchitectureEntry,
    GeneratorCard,
    SamplerEntry,
    ScreeningEntry,
    ZooEntry,
)
from contract.inputs import InputContract
from models.architectures import Architecture
from models.flow import EncoderConfig, VelocityConfig, WeightEncoder, load_velocity, save_velocity, train_flow
from models.generator.artifact import read_card, write_artifact
from models.generator.data_batches import pack_batches, unpack_batches
from models.generator.recipe import GeneratorRecipe
from models.weightspace import WeightLayout, ensemble_size, predictions, probabilities, recalibrate_batchnorm
from models.zoo.datasets import Dataset, Split
from models.zoo.train import Recipe, describe_training

if TYPE_CHECKING:
    from models.zoo.canonical import CanonicalZoo


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
    wanted = recipe.encoder.n_components
    components = None if wanted is None else min(wanted, len(weights) - 1)
    config = EncoderConfig(
        n_components=components,
        whiten=recipe.encoder.whiten,
        components_dtype=recipe.encoder.components_dtype,
    )
    encoder = WeightEncoder.fit(weights, layout, config)
    codes = encoder.encode(weights)
    flow = recipe.flow
    velocity = VelocityConfig(dim=codes.shape[1], hidden=flow.hidden, depth=flow.depth, dropout=flow.dropout)
    trained = train_flow(codes, flow.train, velocity, progress=progress)
    return encoder, trained.model.cpu(), trained.history


def zoo_spread(canonical: dict[str, torch.Tensor], architecture: Architecture) -> float:
    """Median L2 distance from each member of a canonical stacked zoo (K, ...) to its nearest other member."""
    from models.zoo.novelty import nearest_distances

    weights = WeightLayout.from_module(architecture.build()).flatten_stacked(canonical)
    return nearest_distances(weights, weights, exclude_self=True).median().item()


def screening_entry(
    canonical: dict[str, torch.Tensor], architecture: Architecture, dataset: Dataset, recipe: GeneratorRecipe
) -> ScreeningEntry | None:
    """The card's `sampler.screening` for a canonical stacked zoo (K, ...): the threshold is the
    recipe's quantile of the members' screening accuracy, measured after the same BatchNorm
    recalibration a candidate gets. None when the recipe screens nothing."""
    screening, data = recipe.screening, recipe.data
    if screening.images < 1:
        return None
    batches = unpack_batches(
        pack_batches(dataset, data.calibration_size, screening.images, 0),
        data.calibration_size,
        screening.images,
    )
    module = architecture.build()
    state = recalibrate_batchnorm(module, canonical, batches.calibration)
    correct = predictions(module, state, batches.screening.images) == batches.screening.labels  # (K, N)
    subset = None
    if screening.unsure_below:
        subset = unsure_images(module, state, batches.screening, screening.unsure_below)
        if len(subset) <= screening.early_images:
            raise ValueError(
                f"the zoo is sure of all but {len(subset)} of {screening.images} screening images: too "
                "few to screen on; raise ScreeningRecipe.images or unsure_below, or set it to 0"
            )
        correct = correct[:, subset]
    accuracy = correct.float().mean(1)
    early = correct[:, : screening.early_images].sum(1) / max(screening.early_images, 1)
    return ScreeningEntry(
        images=screening.images,
        subset=None if subset is None else subset.tolist(),
        quantile=screening.quantile,
        threshold=torch.quantile(accuracy.double(), screening.quantile).item(),
        max_candidates=screening.max_candidates,
        early_images=screening.early_images,
        early_threshold=early.min().item() if screening.early_images else 0.0,
    )


def unsure_images(
    module: nn.Module, state: dict[str, torch.Tensor], split: Split, below: float
) -> torch.Tensor:
    """Indices (n,) of the images on which some network of the stacked state (K, ...) gives the true
    class a probability below `below` (every misclassified image when `below` > 0.5)."""
    true_class = probabilities(module, state, split.images).gather(
        -1, split.labels.expand(ensemble_size(state), -1).unsqueeze(-1)
    )
    return (true_class.squeeze(-1) < below).any(0).nonzero().flatten()


def zoo_entry(canonical: "CanonicalZoo", members: int | None = None) -> ZooEntry:
    """The card's `zoo` entry: size, template, training recipe, content hash, test accuracy (%),
    of the whole zoo or of its first `members`."""
    zoo = canonical.zoo
    test_acc = zoo.metric("test_acc")[:members] * 100
    return ZooEntry(
        size=len(test_acc),
        template=canonical.kind,
        recipe=zoo.manifest.recipe,
        content_hash=zoo.manifest.canonical["source_content_hash"],
        test_accuracy=AccuracyStats(
            mean=test_acc.mean().item(),
            std=test_acc.std().item(),
            min=test_acc.min().item(),
            max=test_acc.max().item(),
        ),
    )


def zoo_input(canonical: "CanonicalZoo", dataset: Dataset) -> InputContract:
    """What the zoo's members (and so the generated networks) take: the contract declared at
    import, or the dataset's own preprocessing and the zoo recipe's training data."""
    manifest = canonical.zoo.manifest
    declared = manifest.declared_input()
    if declared is not None:
        return declared
    trained_on = describe_training(dataset, Recipe.from_dict(manifest.recipe))
    return dataset.input_contract(canonical.zoo.architecture.input_shape, trained_on)


def generator_card(
    name: str,
    canonical: "CanonicalZoo",
    dataset: Dataset,
    recipe: GeneratorRecipe,
    encoder: WeightEncoder,
    flow_entry: dict[str, Any],
    members: int | None = None,
) -> GeneratorCard:
    """The card of a generator built with `recipe` from `canonical` (or its first `members`);
    content hashes come on writing."""
    architecture = canonical.zoo.architecture
    stacked = {k: v[:members] for k, v in canonical.zoo.stacked.items()}
    return GeneratorCard(
        name=name,
        architecture=ArchitectureEntry(**architecture.to_dict()),
        parameter_count=WeightLayout.from_module(architecture.build()).dim,
        dataset={"name": dataset.name, "fingerprint": dataset.fingerprint},
        input=zoo_input(canonical, dataset),
        recipe=recipe.to_dict(),
        encoder={"code_dim": encoder.code_dim, **asdict(encoder.config)},
        sampler=SamplerEntry(
            method=recipe.sampling.method,
            steps=recipe.sampling.steps,
            residual_noise=recipe.sampling.residual_noise,
            zoo_spread=zoo_spread(stacked, architecture),
            screening=screening_entry(stacked, architecture, dataset, recipe),
        ),
        zoo=zoo_entry(canonical, members),
        flow=flow_entry,
    )


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

    out_dir = Path(out_dir)
    canonical = load_canonical_zoo(zoo_dir, template_kind)
    declared = canonical.zoo.manifest.declared_input()
    dataset = load_dataset(canonical.zoo.architecture.dataset, data_dir, declared and declared.preprocessing)
    if reuse_flow:
        encoder, flow, flow_entry, loss_png = reusable_flow(out_dir, canonical, recipe)
        write_generator(out_dir, canonical, dataset, recipe, encoder, flow, flow_entry)
        if loss_png is not None:
            (out_dir / "loss.png").write_bytes(loss_png)
    else:
        encoder, flow, history = fit_flow(canonical.zoo.stacked, canonical.zoo.architecture, recipe, progress)
        flow_entry = {"final_loss": sum(history[-100:]) / len(history[-100:])}
        write_generator(out_dir, canonical, dataset, recipe, encoder, flow, flow_entry)
        plot_loss_curve(history, out_dir / "loss.png")
    return out_dir


def write_generator(
    out_dir: Path,
    canonical: "CanonicalZoo",
    dataset: Dataset,
    recipe: GeneratorRecipe,
    encoder: WeightEncoder,
    flow: torch.nn.Module,
    flow_entry: dict[str, Any],
    members: int | None = None,
) -> None:
    """Write the artifact folder of a fitted encoder and flow atomically (its card included)."""
    card = generator_card(Path(out_dir).name, canonical, dataset, recipe, encoder, flow_entry, members)
    data = recipe.data
    template = canonical.template
    writers = {
        "template.safetensors": lambda p: save_file({k: v.contiguous() for k, v in template.items()}, str(p)),
        "encoder.safetensors": encoder.save,
        "flow.safetensors": lambda p: save_velocity(flow, p),
        "calibration.safetensors": lambda p: save_file(
            pack_batches(dataset, data.calibration_size, recipe.screening.images, data.validation_size),
            str(p),
        ),
    }
    write_artifact(Path(out_dir), card, writers)


def reusable_flow(
    directory: Path, canonical: "CanonicalZoo", recipe: GeneratorRecipe
) -> tuple[WeightEncoder, torch.nn.Module, dict[str, Any], bytes | None]:
    """The encoder, flow, card `flow` entry and loss curve of the artifact at `directory`, checked
    to come from this zoo and the recipe's flow fields (ValueError naming the fix otherwise)."""
    card = read_card(directory)
    built = GeneratorRecipe.from_dict(card.recipe).flow_fields()
    if card.zoo.content_hash != zoo_entry(canonical).content_hash or built != recipe.flow_fields():
        raise ValueError(
            f"the flow in {directory} was trained on another zoo or with other flow settings "
            "than this build asks for; build without --reuse-flow to train a new one"
        )
    loss = directory / "loss.png"
    return (
        WeightEncoder.load(directory / "encoder.safetensors"),
        load_velocity(directory / "flow.safetensors", device="cpu"),
        card.flow,
        loss.read_bytes() if loss.is_file() else None,
    )

"""Generator artifacts on disk: one folder per generator (DESIGN.md section 4).

    card.json                 contract.card.GeneratorCard: architecture, input contract, zoo,
                              recipe, encoder, sampler, evaluation, content hashes
    template.safetensors      canonicalization template (one state dict)
    encoder.safetensors       per-tensor standardization and PCA (models.flow.WeightEncoder)
    flow.safetensors          velocity network weights (models.flow.save_velocity)
    calibration.safetensors   uint8 training and validation batches (models.generator.data_batches)

A folder is written under a temporary name and swapped into place (contract.files), so a
reader never sees half an artifact; `read_card` checks every file against the sha256
recorded in the card.
"""

from collections.abc import Callable, Mapping
from pathlib import Path

from contract.card import CARD_FILE, CARD_VERSION, GeneratorCard, read_card_file
from contract.files import atomic_write_text, replace_directory
from models.zoo.store import file_sha256

ARTIFACT_FILES = (
    "template.safetensors",
    "encoder.safetensors",
    "flow.safetensors",
    "calibration.safetensors",
)


class ArtifactError(ValueError):
    """A generator artifact is missing, incomplete or corrupted; the message names the file and the fix."""


def write_artifact(
    directory: Path, card: GeneratorCard, writers: Mapping[str, Callable[[Path], None]]
) -> None:
    """Write an artifact atomically: each `writers[name](path)` fills one of ARTIFACT_FILES.

    The card gets its `content_hashes`; an existing artifact is replaced whole.
    """
    missing = sorted(set(ARTIFACT_FILES) - set(writers))
    if missing:
        raise ValueError(f"an artifact needs writers for {', '.join(missing)}")

    def fill(staging: Path) -> None:
        for name in ARTIFACT_FILES:
            writers[name](staging / name)
        hashes = {name: file_sha256(staging / name) for name in ARTIFACT_FILES}
        (staging / CARD_FILE).write_text(card.model_copy(update={"content_hashes": hashes}).to_json())

    replace_directory(directory, fill)


def read_card(directory: Path, verify: bool = True) -> GeneratorCard:
    """The artifact's card, after checking that every file is present and (with `verify`) intact."""
    directory = Path(directory)
    rebuild = f"rebuild it with `make generators` or restore the folder {directory}"
    card_path = directory / CARD_FILE
    if not card_path.is_file():
        raise ArtifactError(f"{directory} is not a generator artifact: card.json is missing; {rebuild}")
    try:
        card = read_card_file(card_path)
    except ValueError as error:
        raise ArtifactError(f"{error}; {rebuild}") from None
    if card.version != CARD_VERSION:
        raise ArtifactError(f"{card_path} has version {card.version}, expected {CARD_VERSION}; {rebuild}")
    for name in ARTIFACT_FILES:
        path = directory / name
        if not path.is_file():
            raise ArtifactError(f"{path} is missing; {rebuild}")
        if verify and file_sha256(path) != card.content_hashes.get(name):
            raise ArtifactError(f"{path} does not match the sha256 in card.json (corrupted); {rebuild}")
    return card


def update_card(directory: Path, update: Callable[[GeneratorCard], GeneratorCard]) -> GeneratorCard:
    """Rewrite an artifact's card.json atomically as `update(card)` (the hashed files are untouched)."""
    card = update(read_card(directory, verify=False))
    atomic_write_text(Path(directory) / CARD_FILE, card.to_json())
    return card


def discover_generators(root: Path) -> dict[str, Path]:
    """Generator name -> artifact folder, for each folder under `root` holding a card.json
    (folders being written, whose names start with a dot, are skipped)."""
    root = Path(root)
    if not root.is_dir():
        return {}
    return {
        path.parent.name: path.parent
        for path in sorted(root.glob("*/card.json"))
        if not path.parent.name.startswith(".")
    }

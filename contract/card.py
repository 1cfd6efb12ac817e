"""A generator card (`card.json` of an artifact folder, DESIGN.md section 4), typed.

The card is written by `models.generator.build` and read by the worker, the API's catalog
and the CLI, all through `GeneratorCard`. Sections owned by the ML code (the build recipe,
the encoder config, evaluation tables, the settings sweep) stay JSON objects here; the
fields other packages read are typed. The card file's stamp (`card_stamp`) tells the API and
the workers, for the price of a stat, that an artifact is new or was replaced.
"""

import json
import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from contract.inputs import InputContract

CARD_FILE = "card.json"
CARD_VERSION = 2  # 2: nested recipe and the input contract


class AccuracyStats(BaseModel):
    """Test accuracy in percent over a set of networks."""

    mean: float
    std: float
    min: float
    max: float


class ArchitectureEntry(BaseModel):
    name: str  # registered architecture name
    family: str
    config: dict[str, Any]
    dataset: str
    input_shape: list[int]


class ScreeningEntry(BaseModel):
    """Keep a candidate only if its accuracy on `images` training images reaches `threshold`:
    the `quantile` of the zoo members' own accuracy on them; at most `max_candidates` per network."""

    images: int = Field(ge=1)
    quantile: float = Field(ge=0, le=1)
    threshold: float  # accuracy in [0, 1]
    max_candidates: float = Field(ge=1)
    # Two stages: a candidate below `early_threshold` (the zoo's lowest accuracy) on the first
    # `early_images` is rejected without scoring the rest; 0 = one stage.
    early_images: int = Field(default=0, ge=0)
    early_threshold: float = 0.0
    # Indices of the screening images scored (those some zoo member is unsure of); None: all of them.
    # `threshold` and the first stage then refer to these images only.
    subset: list[int] | None = None


class SamplerEntry(BaseModel):
    method: str  # ODE solver: euler, midpoint or rk4
    steps: int
    residual_noise: float = 0.0  # as a novelty ratio (see models.generator.recipe)
    zoo_spread: float = 0.0  # median nearest-member L2 distance within the canonical zoo
    screening: ScreeningEntry | None = None


class ZooEntry(BaseModel):
    size: int
    template: str  # canonicalization template kind
    recipe: dict[str, Any]  # how every member was trained
    content_hash: str
    test_accuracy: AccuracyStats


class GeneratedEntry(BaseModel):
    test_accuracy: AccuracyStats
    novelty_ratio: float  # weight space: nearest-member distance / the zoo's own (secondary)
    # functional novelty, the headline (absent on cards evaluated before it was measured):
    error_iou: float | None = None  # median largest error IoU with a zoo member
    zoo_error_iou: float | None = None  # the zoo's own, leave one out
    disagreement: float | None = None  # median share of test predictions unlike the nearest member's


class GeneratorCard(BaseModel):
    """Everything about one generator artifact that is not a tensor."""

    model_config = ConfigDict(extra="forbid")

    name: str
    version: int = CARD_VERSION
    architecture: ArchitectureEntry
    parameter_count: int
    dataset: dict[str, str]  # name, fingerprint
    input: InputContract
    recipe: dict[str, Any]  # models.generator.recipe.GeneratorRecipe.to_dict()
    encoder: dict[str, Any]  # the fitted encoder's config
    sampler: SamplerEntry
    zoo: ZooEntry
    flow: dict[str, Any]  # e.g. final_loss
    content_hashes: dict[str, str] = Field(default_factory=dict)  # file name -> sha256
    evaluation: dict[str, Any] | None = None  # models.generator.evaluation table (test split)
    generated: GeneratedEntry | None = None  # the headline of `evaluation`
    settings_sweep: dict[str, Any] | None = None  # the validation table the setting was chosen from

    def to_json(self) -> str:
        return self.model_dump_json(indent=2, exclude_none=True) + "\n"


def read_card_file(path: str | os.PathLike) -> GeneratorCard:
    """Parse a card.json (ValueError naming the file and what is wrong)."""
    try:
        return GeneratorCard.model_validate(json.loads(Path(path).read_text()))
    except (json.JSONDecodeError, ValueError) as error:
        raise ValueError(f"{path} is not a valid generator card: {error}") from None


CardStamp = tuple[int, int, int, int]  # card.json's (device, inode, mtime in ns, size)


def card_stamp(directory: str | os.PathLike) -> CardStamp | None:
    """The identity of an artifact folder's card.json, or None when there is none.

    Artifacts are published whole by renaming a new folder into place, and cards are rewritten
    by renaming a new file over the old (contract.files): either way a new card.json file appears
    while the old one still exists, so its inode differs. Equal stamps mean the same artifact.
    """
    try:
        info = os.stat(Path(directory) / CARD_FILE)
    except (FileNotFoundError, NotADirectoryError):
        return None
    return (info.st_dev, info.st_ino, info.st_mtime_ns, info.st_size)


def artifact_stamps(root: str | os.PathLike) -> dict[str, CardStamp]:
    """Generator name -> card stamp for every `<root>/<name>/card.json` (folders being written,
    whose names start with a dot, are skipped): one directory listing and one stat per artifact."""
    try:
        names = sorted(entry.name for entry in os.scandir(root) if not entry.name.startswith("."))
    except (FileNotFoundError, NotADirectoryError):
        return {}
    stamps = {name: card_stamp(Path(root) / name) for name in names}
    return {name: stamp for name, stamp in stamps.items() if stamp is not None}

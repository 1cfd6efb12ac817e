"""Generator artifacts on disk: one folder per generator (DESIGN.md section 4).

    card.json                 architecture, dataset, zoo, flow, encoder, evaluation, hashes
    template.safetensors      canonicalization template (one state dict)
    encoder.safetensors       per-tensor standardization and PCA (models.flow.WeightEncoder)
    flow.safetensors          velocity network weights (models.flow.save_velocity)
    calibration.safetensors   BatchNorm calibration images (training split) and a
                              held-out validation batch (images + labels)

A folder is written under a temporary name and renamed into place, so a reader
never sees half an artifact; `read_card` checks every file against the sha256
recorded in the card.
"""

import json
import os
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from models.zoo.store import file_sha256

ARTIFACT_VERSION = 1
ARTIFACT_FILES = (
    "template.safetensors",
    "encoder.safetensors",
    "flow.safetensors",
    "calibration.safetensors",
)


class ArtifactError(ValueError):
    """A generator artifact is missing, incomplete or corrupted; the message names the file and the fix."""


def write_artifact(
    directory: Path, card: Mapping[str, Any], writers: Mapping[str, Callable[[Path], None]]
) -> None:
    """Write an artifact atomically: each `writers[name](path)` fills one of ARTIFACT_FILES.

    The card gets `version` and `content_hashes`; an existing artifact is replaced whole.
    """
    missing = sorted(set(ARTIFACT_FILES) - set(writers))
    if missing:
        raise ValueError(f"an artifact needs writers for {', '.join(missing)}")
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = directory.with_name(f".{directory.name}.tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        for name in ARTIFACT_FILES:
            writers[name](staging / name)
        full_card = {
            **card,
            "version": ARTIFACT_VERSION,
            "content_hashes": {name: file_sha256(staging / name) for name in ARTIFACT_FILES},
        }
        (staging / "card.json").write_text(json.dumps(full_card, indent=2) + "\n")
        retired = directory.with_name(f".{directory.name}.old-{os.getpid()}")
        if directory.exists():
            directory.rename(retired)
        staging.rename(directory)
        shutil.rmtree(retired, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def read_card(directory: Path, verify: bool = True) -> dict[str, Any]:
    """The artifact's card, after checking that every file is present and (with `verify`) intact."""
    directory = Path(directory)
    rebuild = f"rebuild it with `make generators` or restore the folder {directory}"
    card_path = directory / "card.json"
    if not card_path.is_file():
        raise ArtifactError(f"{directory} is not a generator artifact: card.json is missing; {rebuild}")
    try:
        card = json.loads(card_path.read_text())
    except json.JSONDecodeError as error:
        raise ArtifactError(f"{card_path} is not valid JSON ({error}); {rebuild}") from None
    if card.get("version") != ARTIFACT_VERSION:
        raise ArtifactError(
            f"{card_path} has version {card.get('version')!r}, expected {ARTIFACT_VERSION}; {rebuild}"
        )
    hashes = card.get("content_hashes", {})
    for name in ARTIFACT_FILES:
        path = directory / name
        if not path.is_file():
            raise ArtifactError(f"{path} is missing; {rebuild}")
        if verify and file_sha256(path) != hashes.get(name):
            raise ArtifactError(f"{path} does not match the sha256 in card.json (corrupted); {rebuild}")
    return card


def update_card(directory: Path, updates: Mapping[str, Any]) -> None:
    """Merge `updates` into an artifact's card.json atomically (the hashed files are untouched)."""
    card = read_card(directory, verify=False)
    path = Path(directory) / "card.json"
    temporary = path.with_name(f".card.json.tmp-{os.getpid()}")
    temporary.write_text(json.dumps({**card, **updates}, indent=2) + "\n")
    os.replace(temporary, path)


def discover_generators(root: Path) -> dict[str, Path]:
    """Generator name -> artifact folder, for each folder under `root` holding a card.json."""
    root = Path(root)
    if not root.is_dir():
        return {}
    return {path.parent.name: path.parent for path in sorted(root.glob("*/card.json"))}

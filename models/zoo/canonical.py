"""Canonical zoos: a zoo permuted onto a template, stored in the zoo format.

`canonicalize_zoo(DIR)` writes, for each template kind (models.zoo.templates):

```
DIR/canonical/<kind>/manifest.json            a zoo manifest whose `canonical` field holds
DIR/canonical/<kind>/chunk-*.safetensors      the template kind, the source zoo's content hash,
DIR/canonical/<kind>/template.safetensors     distances before / after and the template's sha256
DIR/canonical/summary.json                    both kinds' figures and `best`: the kind with the
                                              smaller mean pairwise distance after alignment
```

Members keep their order, seeds and chunking. A permutation does not change
what a network computes, so each canonical member is re-evaluated on the
validation split and must match its source accuracy (`max_val_acc_change`).
`load_canonical_zoo(DIR)` returns the best kind (or the one asked for) and
refuses a canonical zoo whose source zoo has changed since.
"""

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from contract.files import atomic_write, atomic_write_text
from models.weightspace import StateDictError, batched_evaluate, check_state_dict
from models.zoo.datasets import Split, load_dataset
from models.zoo.store import (
    MANIFEST,
    ChunkRecord,
    Zoo,
    ZooError,
    ZooManifest,
    content_hash,
    file_sha256,
    load_zoo,
    read_manifest,
    write_chunk,
    write_manifest,
)
from models.zoo.templates import (
    TEMPLATES,
    ProgressCallback,
    TemplateResult,
    average_template,
    flat_parameters,
    mean_pairwise_distance,
    medoid_template,
)
from models.zoo.train import eval_batch_size

CANONICAL_DIR = "canonical"
SUMMARY = "summary.json"
TEMPLATE_FILE = "template.safetensors"


@dataclass
class CanonicalZoo:
    zoo: Zoo  # the aligned members (K, ...) and their manifest (`manifest.canonical` describes them)
    template: dict[str, torch.Tensor]  # the state dict every member was aligned to
    kind: str  # "medoid" or "average"


def canonical_dir(directory: str | os.PathLike, kind: str) -> Path:
    return Path(directory) / CANONICAL_DIR / kind


def build_template(
    kind: str, zoo: Zoo, seed: int, tol: float, max_rounds: int, progress: ProgressCallback | None
) -> TemplateResult:
    if kind == "medoid":
        return medoid_template(zoo.architecture, zoo.stacked, seed=seed, progress=progress)
    if kind == "average":
        return average_template(
            zoo.architecture, zoo.stacked, seed=seed, tol=tol, max_rounds=max_rounds, progress=progress
        )
    raise ValueError(f"unknown template {kind!r}; choose one of {', '.join(TEMPLATES)}")


def write_canonical_zoo(
    zoo: Zoo, result: TemplateResult, info: dict[str, Any], val_acc: torch.Tensor
) -> Path:
    """Write `result.aligned` as a zoo beside `zoo`. Member metrics are copied from the source, except
    `val_acc`, re-measured on the aligned members (K,) as a check that alignment kept each function."""
    out = canonical_dir(zoo.path, result.kind)
    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST).unlink(missing_ok=True)  # until rewritten, the folder reads as "no zoo", not corrupted
    template = {k: v.contiguous() for k, v in result.template.items()}
    atomic_write(out / TEMPLATE_FILE, lambda path: save_file(template, str(path), {"format": "pt"}))
    source = zoo.manifest
    manifest = ZooManifest(
        architecture=source.architecture,
        dataset=source.dataset,
        recipe=source.recipe,
        seeds=source.seeds,
        chunk_size=source.chunk_size,
        members=[{**m, "val_acc": val_acc[i].item()} for i, m in enumerate(source.members)],
        environment=source.environment,
        imported=source.imported,
        input=source.input,
        canonical={**info, "template_sha256": file_sha256(out / TEMPLATE_FILE)},
    )
    for index, chunk in enumerate(source.chunks):
        part = {k: v[chunk.first : chunk.first + chunk.count] for k, v in result.aligned.items()}
        name, sha256 = write_chunk(out, index, part)
        manifest.chunks.append(ChunkRecord(name, chunk.first, chunk.count, sha256, 0.0))
    manifest.complete = True
    manifest.content_hash = content_hash(manifest)
    write_manifest(out, manifest)
    return out


def validation_accuracy(zoo: Zoo, stacked: dict[str, torch.Tensor], val: Split) -> torch.Tensor:
    """(K,) accuracy of `stacked` members on `val`, evaluated one source chunk of members at a time
    (a chunk is the group size the zoo was trained with, which keeps batched calls efficient)."""
    module = zoo.architecture.build()
    parts = []
    for chunk in zoo.manifest.chunks:
        members = {k: v[chunk.first : chunk.first + chunk.count] for k, v in stacked.items()}
        batch_size = eval_batch_size(zoo.architecture, chunk.count)
        parts.append(batched_evaluate(module, members, val.images, val.labels, batch_size)[1])
    return torch.cat(parts)


def canonicalize_zoo(
    directory: str | os.PathLike,
    kinds: tuple[str, ...] = TEMPLATES,
    seed: int = 0,
    tol: float = 1e-4,
    max_rounds: int = 10,
    data_dir: str | None = None,
    progress: ProgressCallback | None = None,
) -> dict[str, Any]:
    """Canonicalize the zoo at `directory` onto each template kind; returns (and writes) the summary."""
    zoo = load_zoo(directory)
    before = mean_pairwise_distance(flat_parameters(zoo.architecture, zoo.stacked))
    declared = zoo.manifest.declared_input()
    dataset = load_dataset(zoo.architecture.dataset, data_dir, declared and declared.preprocessing)
    figures = {}
    for kind in kinds:
        result = build_template(kind, zoo, seed, tol, max_rounds, progress)
        val_acc = validation_accuracy(zoo, result.aligned, dataset.val)
        info = {
            "template": kind,
            "source": str(zoo.path),
            "source_content_hash": zoo.manifest.content_hash,
            "reference_member": result.reference,
            "rounds": result.rounds,
            "movement": result.movement,
            "members_changed": result.changed,
            "seed": seed,
            "mean_pairwise_distance_before": before,
            "mean_pairwise_distance_after": mean_pairwise_distance(
                flat_parameters(zoo.architecture, result.aligned)
            ),
            "max_val_acc_change": (val_acc - zoo.metric("val_acc")).abs().max().item(),
        }
        write_canonical_zoo(zoo, result, info, val_acc)
        figures[kind] = info
    summary = {
        "source_content_hash": zoo.manifest.content_hash,
        "mean_pairwise_distance_before": before,
        "templates": figures,
        "best": min(figures, key=lambda k: figures[k]["mean_pairwise_distance_after"]),
    }
    atomic_write_text(Path(directory) / CANONICAL_DIR / SUMMARY, json.dumps(summary, indent=2))
    return summary


def read_summary(directory: str | os.PathLike) -> dict[str, Any] | None:
    """DIR/canonical/summary.json, or None if the zoo has not been canonicalized."""
    path = Path(directory) / CANONICAL_DIR / SUMMARY
    return json.loads(path.read_text()) if path.is_file() else None


def load_canonical_zoo(directory: str | os.PathLike, kind: str | None = None) -> CanonicalZoo:
    """The canonical zoo of the zoo at `directory`: template `kind`, or the summary's best.

    Verified like any zoo (models.zoo.store.load_zoo), plus: the template file's
    hash, and that the source zoo is the one it was made from.
    """
    summary = read_summary(directory)
    hint = f"run `dwf zoo canonicalize {directory}`"
    if summary is None:
        raise ZooError(f"the zoo at {directory} has not been canonicalized; {hint}")
    kind = kind or summary["best"]
    if kind not in summary["templates"]:
        raise ZooError(f"no {kind!r} canonical zoo at {directory} (have: {', '.join(summary['templates'])})")
    zoo = load_zoo(canonical_dir(directory, kind))
    source_hash = read_manifest(directory).content_hash
    if zoo.manifest.canonical is None or zoo.manifest.canonical["source_content_hash"] != source_hash:
        raise ZooError(f"the canonical zoo at {zoo.path} was made from another version of the zoo; {hint}")
    template_path = zoo.path / TEMPLATE_FILE
    if not template_path.is_file() or file_sha256(template_path) != zoo.manifest.canonical["template_sha256"]:
        raise ZooError(f"{template_path} is missing or corrupted; {hint}")
    template = load_file(str(template_path))
    try:
        check_state_dict(template, {k: v[0] for k, v in zoo.stacked.items()})
    except StateDictError as err:
        raise ZooError(f"{template_path}: {err}; {hint}") from None
    return CanonicalZoo(zoo, template, kind)

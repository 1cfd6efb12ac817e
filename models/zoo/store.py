"""The zoo format: a directory of safetensors chunks plus a JSON manifest.

```
DIR/manifest.json            what the zoo is and which chunks are complete (ZooManifest)
DIR/chunk-0000.safetensors   stacked state dict of members [0, C): every state-dict key,
DIR/chunk-0001.safetensors   BatchNorm buffers included, with a leading axis of length C
...
```

Every file is written through contract.files (a temporary name, flushed, renamed
over the final name), so a reader sees either the old file or the new one. A chunk
counts only once the manifest lists it with its sha256; the manifest is
rewritten after each chunk. A crash can leave at most an unlisted chunk file,
which is ignored and overwritten when the build resumes. `complete` turns true
(and `content_hash` is set) with the last chunk.

Loading checks, and refuses with a ZooError that names the problem and the fix:
the manifest's format and fields, completeness, every chunk's presence and
sha256, the content hash, and every tensor's key and shape against the
architecture.
"""

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from contract.files import atomic_write, atomic_write_text
from contract.inputs import InputContract
from models.architectures import Architecture, UnknownArchitectureError, get_architecture
from models.weightspace import StateDictError, check_state_dict

FORMAT = "dwf-zoo"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
REQUIRED_FIELDS = ("architecture", "dataset", "recipe", "seeds", "chunk_size", "format", "format_version")


class ZooError(ValueError):
    """A zoo is missing, incomplete, corrupted or inconsistent; the message says how to fix it."""


@dataclass
class ChunkRecord:
    """One completed chunk: members [first, first + count) of the zoo."""

    file: str  # name inside the zoo directory
    first: int
    count: int
    sha256: str  # of the file's bytes
    wall_time_s: float  # training + evaluation + writing


@dataclass
class ZooManifest:
    """Everything about a zoo except its tensors. `members[i]` holds member i's seed and metrics."""

    architecture: dict[str, Any]  # Architecture.to_dict()
    dataset: dict[str, str]  # {"name", "fingerprint"}
    recipe: dict[str, Any]  # Recipe.to_dict() (or, for a canonical zoo, the source zoo's recipe)
    seeds: list[int]
    chunk_size: int
    chunks: list[ChunkRecord] = field(default_factory=list)
    members: list[dict[str, Any]] = field(default_factory=list)
    complete: bool = False
    build_wall_time_s: float = 0.0  # sum of the chunks' wall times (so resumed builds add up)
    environment: dict[str, Any] = field(default_factory=dict)  # torch version, threads
    canonical: dict[str, Any] | None = None  # set for a canonical zoo (see models.zoo.canonical)
    # set for imported members (models.zoo.importing): the source, key map and import command
    imported: dict[str, Any] | None = None
    # the input contract the members expect (contract.inputs.InputContract), when declared at import;
    # None: the dataset's own preprocessing, as for trained zoos
    input: dict[str, Any] | None = None
    content_hash: str | None = None  # set when complete; see `content_hash`
    format: str = FORMAT
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        # Compare like the JSON on disk: tuples become lists.
        self.architecture, self.dataset, self.recipe = json.loads(
            json.dumps([self.architecture, self.dataset, self.recipe])
        )

    @property
    def size(self) -> int:
        return len(self.seeds)

    @property
    def members_done(self) -> int:
        return sum(c.count for c in self.chunks)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def declared_input(self) -> InputContract | None:
        """The input contract declared for the members, or None (the dataset's own preprocessing)."""
        return None if self.input is None else InputContract.model_validate(self.input)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ZooManifest":
        names = {f.name for f in fields(cls)}
        missing = [n for n in REQUIRED_FIELDS if n not in data]
        if missing:
            raise ZooError(f"manifest is missing fields: {', '.join(missing)}")
        values = {k: v for k, v in data.items() if k in names}
        values["chunks"] = [ChunkRecord(**c) for c in values.get("chunks", [])]
        return cls(**values)


def content_hash(manifest: ZooManifest) -> str:
    """sha256 over the manifest without `content_hash` and wall times: covers every chunk's
    sha256 (hence every tensor), the seeds, the recipe and every member's metrics."""
    data = manifest.to_dict()
    for key in ("content_hash", "build_wall_time_s"):
        data.pop(key)
    for key in ("imported", "input"):  # added later: absent from the hash unless set, so older zoos verify
        if data[key] is None:
            data.pop(key)
    for chunk in data["chunks"]:
        chunk.pop("wall_time_s")
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def chunk_name(index: int) -> str:
    return f"chunk-{index:04d}.safetensors"


def write_chunk(directory: Path, index: int, stacked: dict[str, torch.Tensor]) -> tuple[str, str]:
    """Write chunk `index` atomically; returns (file name, sha256)."""
    name = chunk_name(index)
    tensors = {k: v.contiguous() for k, v in stacked.items()}
    atomic_write(directory / name, lambda path: save_file(tensors, str(path), metadata={"format": "pt"}))
    return name, file_sha256(directory / name)


def write_manifest(directory: Path, manifest: ZooManifest) -> None:
    """Rewrite DIR/manifest.json atomically."""
    atomic_write_text(directory / MANIFEST, json.dumps(manifest.to_dict(), indent=2))


def write_complete_zoo(
    directory: Path, manifest: ZooManifest, stacked: dict[str, torch.Tensor]
) -> ZooManifest:
    """Write all members at once: `stacked` (K, ...) in chunks of `manifest.chunk_size`, then the
    manifest, complete with its content hash. `manifest.members` must hold the K metric records."""
    directory.mkdir(parents=True, exist_ok=True)
    members = next(iter(stacked.values())).shape[0]
    for index, first in enumerate(range(0, members, manifest.chunk_size)):
        part = {k: v[first : first + manifest.chunk_size] for k, v in stacked.items()}
        name, sha256 = write_chunk(directory, index, part)
        manifest.chunks.append(ChunkRecord(name, first, len(next(iter(part.values()))), sha256, 0.0))
    manifest.complete = True
    manifest.content_hash = content_hash(manifest)
    check_layout(manifest, directory)
    write_manifest(directory, manifest)
    return manifest


def read_manifest(directory: str | os.PathLike) -> ZooManifest:
    """Parse DIR/manifest.json; a missing, unparsable or foreign manifest is a ZooError."""
    path = Path(directory) / MANIFEST
    if not path.is_file():
        raise ZooError(f"no zoo at {directory}: {MANIFEST} is missing (build one with `dwf zoo train`)")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ZooError(
            f"{path} is not valid JSON ({err}): the manifest is corrupted; delete {directory} "
            "and rebuild the zoo with `dwf zoo train`"
        ) from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ZooError(f"{path} is not a DeepWeightFlow zoo manifest (format must be {FORMAT!r})")
    if data.get("format_version") != FORMAT_VERSION:
        raise ZooError(
            f"{path} has zoo format version {data.get('format_version')}, this code reads version "
            f"{FORMAT_VERSION}; rebuild the zoo with `dwf zoo train`"
        )
    try:
        return ZooManifest.from_dict(data)
    except (TypeError, ZooError) as err:
        raise ZooError(f"{path} has malformed fields ({err}); rebuild the zoo with `dwf zoo train`") from None


def rebuild_hint(manifest: ZooManifest, directory: str | os.PathLike) -> str:
    """The command that rebuilds (or resumes) this zoo."""
    if manifest.canonical is not None:
        return f"`dwf zoo canonicalize {manifest.canonical['source']}`"
    if manifest.imported is not None:
        return f"`{manifest.imported['command']}`"
    recipe = manifest.recipe
    options = " ".join(
        f"--{key.replace('_', '-')} {recipe[key] or 0}"
        for key in ("epochs", "batch_size", "lr", "weight_decay", "optimizer", "schedule", "train_subset")
    )
    return (
        f"`dwf zoo train {manifest.architecture['name']} --members {manifest.size} {options} "
        f"--chunk-size {manifest.chunk_size} --first-seed {manifest.seeds[0]} --out {directory}`"
    )


def check_chunk_file(directory: Path, chunk: ChunkRecord, manifest: ZooManifest) -> None:
    """Raise ZooError if a listed chunk is missing or its bytes differ from the recorded sha256."""
    path = directory / chunk.file
    if not path.is_file():
        raise ZooError(
            f"{path} is listed in the manifest but missing; rerun {rebuild_hint(manifest, directory)} "
            "after deleting the manifest to rebuild the zoo"
        )
    if file_sha256(path) != chunk.sha256:
        raise ZooError(
            f"{path}: sha256 mismatch, the file is corrupted; delete it and its manifest entry (or the "
            f"whole zoo) and rerun {rebuild_hint(manifest, directory)} to rebuild it"
        )


def check_layout(manifest: ZooManifest, directory: Path) -> None:
    """Raise ZooError unless the chunks tile members [0, members_done) and metrics match the seeds."""
    expected = 0
    for chunk in manifest.chunks:
        if chunk.first != expected or chunk.count < 1:
            raise ZooError(f"{directory / MANIFEST}: chunks do not tile the members (at {chunk.file})")
        expected += chunk.count
    if expected > manifest.size or len(manifest.members) != expected:
        raise ZooError(
            f"{directory / MANIFEST}: {expected} members in chunks, {len(manifest.members)} metric "
            f"records and {manifest.size} seeds do not agree; the manifest is inconsistent"
        )
    if [m.get("seed") for m in manifest.members] != manifest.seeds[:expected]:
        raise ZooError(f"{directory / MANIFEST}: member metrics do not follow the seed list")


@dataclass
class Zoo:
    """A loaded zoo: the architecture, all members stacked (K, ...), and the manifest."""

    architecture: Architecture
    stacked: dict[str, torch.Tensor]
    manifest: ZooManifest
    path: Path

    @property
    def size(self) -> int:
        return self.manifest.size

    def metric(self, name: str) -> torch.Tensor:
        """(K,) per-member metric, e.g. "test_acc"."""
        return torch.tensor([m[name] for m in self.manifest.members], dtype=torch.float64)


def architecture_of(manifest: ZooManifest, directory: Path) -> Architecture:
    """The registered architecture the manifest names; its config must be the registered one."""
    try:
        architecture = get_architecture(manifest.architecture["name"])
    except (UnknownArchitectureError, KeyError) as err:
        raise ZooError(f"{directory / MANIFEST}: {err}") from None
    if json.loads(json.dumps(architecture.to_dict())) != manifest.architecture:
        raise ZooError(
            f"{directory / MANIFEST}: the zoo was built for a different configuration of "
            f"{architecture.name!r} than the registered one; rebuild it with "
            + rebuild_hint(manifest, directory)
        )
    return architecture


def read_chunk(
    directory: Path, chunk: ChunkRecord, reference: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Load one chunk and check its keys, shapes and member count against `reference` (one state dict)."""
    path = directory / chunk.file
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as err:
        raise ZooError(f"{path} is not a readable safetensors file ({err}); the chunk is corrupted") from None
    try:
        check_state_dict(tensors, reference, stacked=True)
    except StateDictError as err:
        raise ZooError(f"{path}: {err}") from None
    count = next(iter(tensors.values())).shape[0]
    if count != chunk.count:
        raise ZooError(f"{path} holds {count} members, the manifest says {chunk.count}")
    return tensors


def load_zoo(directory: str | os.PathLike) -> Zoo:
    """Load a complete zoo, verifying everything (see the module docstring)."""
    directory = Path(directory)
    manifest = read_manifest(directory)
    if not manifest.complete:
        raise ZooError(
            f"the zoo at {directory} is incomplete ({manifest.members_done} of {manifest.size} members "
            f"built); rerun {rebuild_hint(manifest, directory)} to finish it"
        )
    check_layout(manifest, directory)
    if manifest.members_done != manifest.size:
        raise ZooError(f"{directory / MANIFEST} says complete but lists only {manifest.members_done} members")
    if manifest.content_hash != content_hash(manifest):
        raise ZooError(
            f"{directory / MANIFEST}: content hash mismatch, the manifest was edited or corrupted; "
            f"rebuild the zoo with {rebuild_hint(manifest, directory)}"
        )
    architecture = architecture_of(manifest, directory)
    reference = architecture.build().state_dict()
    parts = []
    for chunk in manifest.chunks:
        check_chunk_file(directory, chunk, manifest)
        parts.append(read_chunk(directory, chunk, reference))
    stacked = {k: torch.cat([p[k] for p in parts]) for k in reference}
    return Zoo(architecture, stacked, manifest, directory)

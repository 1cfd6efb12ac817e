"""Build a zoo chunk by chunk, resumably.

Members are trained `chunk_size` at a time (one batched run per chunk, which
bounds memory and is the unit of resumption). After each chunk its tensors are
written and the manifest is rewritten to list it (models.zoo.store). Running
`train_zoo` again on the same directory verifies the chunks already listed and
continues after the last one; settings that differ from the manifest's are an
error rather than a silently mixed zoo.
"""

import time
from collections.abc import Callable
from pathlib import Path

import torch

from models.architectures import get_architecture
from models.canon import spec_for
from models.zoo.datasets import load_dataset
from models.zoo.store import (
    MANIFEST,
    ChunkRecord,
    ZooError,
    ZooManifest,
    check_chunk_file,
    check_layout,
    content_hash,
    read_manifest,
    write_chunk,
    write_manifest,
)
from models.zoo.train import Recipe, evaluate_members, train_members, training_split

DEFAULT_CHUNK_SIZE = 25
# vmap over many convolutional networks is memory-bound on CPU: wider chunks are no faster per
# member there, so keep the resumption unit small.
CHUNK_SIZES = {"cnn-fashion": 5}
ChunkCallback = Callable[[ChunkRecord], None]
BuildStepCallback = Callable[[int, int], None]  # (steps done in the whole build, total steps)


def default_chunk_size(architecture: str) -> int:
    return CHUNK_SIZES.get(architecture, DEFAULT_CHUNK_SIZE)


def describe_seeds(seeds: list[int]) -> str:
    return f"{len(seeds)} members (seeds {seeds[0]}..{seeds[-1]})"


def check_resumable(existing: ZooManifest, requested: ZooManifest, directory: Path) -> None:
    """Raise ZooError naming every setting in which a rerun differs from the zoo being resumed."""
    differences = []
    for name in ("architecture", "dataset", "recipe", "seeds", "chunk_size"):
        have, want = getattr(existing, name), getattr(requested, name)
        if isinstance(have, dict) and isinstance(want, dict):
            differences += [
                f"{name}.{key}: zoo has {have.get(key)!r}, requested {want.get(key)!r}"
                for key in sorted(have.keys() | want.keys())
                if have.get(key) != want.get(key)
            ]
        elif name == "seeds" and have != want:
            differences.append(f"seeds: zoo has {describe_seeds(have)}, requested {describe_seeds(want)}")
        elif have != want:
            differences.append(f"{name}: zoo has {have!r}, requested {want!r}")
    if differences:
        raise ZooError(
            f"cannot resume the zoo at {directory}: its settings differ from this run ("
            + "; ".join(differences)
            + "). Rerun with the zoo's settings, or choose another --out to build a new zoo."
        )


def start_or_resume(directory: Path, requested: ZooManifest) -> ZooManifest:
    """The manifest to continue from: the existing one (verified), or `requested`, written fresh."""
    if not (directory / MANIFEST).exists():
        strays = [p.name for p in directory.iterdir() if not p.name.startswith((".chunk-", "chunk-"))]
        if strays:
            raise ZooError(f"{directory} is not empty and holds no zoo ({', '.join(sorted(strays)[:5])})")
        write_manifest(directory, requested)
        return requested
    existing = read_manifest(directory)
    check_resumable(existing, requested, directory)
    check_layout(existing, directory)
    for chunk in existing.chunks:
        check_chunk_file(directory, chunk, existing)
    return existing


def train_zoo(
    architecture: str,
    members: int,
    recipe: Recipe,
    out: str | Path,
    first_seed: int = 0,
    chunk_size: int | None = None,
    data_dir: str | None = None,
    on_step: BuildStepCallback | None = None,
    on_chunk: ChunkCallback | None = None,
) -> ZooManifest:
    """Train (or finish) a zoo of `members` networks with seeds first_seed, first_seed + 1, ...

    Writes DIR=`out` in the zoo format and returns its final manifest. `chunk_size`
    defaults to `default_chunk_size(architecture)`. `on_step` reports progress over
    the whole build; `on_chunk` is called after each chunk is safely on disk.
    """
    chunk_size = chunk_size or default_chunk_size(architecture)
    if members < 1 or chunk_size < 1:
        raise ValueError("members and chunk_size must be positive")
    arch = get_architecture(architecture)
    spec_for(arch)  # a plugin's traced spec must pass the permutation-invariance test before any training
    dataset = load_dataset(arch.dataset, data_dir)
    directory = Path(out)
    directory.mkdir(parents=True, exist_ok=True)
    requested = ZooManifest(
        architecture=arch.to_dict(),
        dataset={"name": dataset.name, "fingerprint": dataset.fingerprint},
        recipe=recipe.to_dict(),
        seeds=list(range(first_seed, first_seed + members)),
        chunk_size=chunk_size,
        environment={"torch": torch.__version__, "threads": torch.get_num_threads()},
    )
    manifest = start_or_resume(directory, requested)

    steps_per_chunk = recipe.epochs * (len(training_split(dataset, recipe)) // recipe.batch_size)
    num_chunks = -(-members // chunk_size)
    for index in range(len(manifest.chunks), num_chunks):
        started = time.perf_counter()
        first = index * chunk_size
        seeds = manifest.seeds[first : first + chunk_size]

        def chunk_step(done: int, _total: int, index: int = index) -> None:
            if on_step is not None:
                on_step(index * steps_per_chunk + done, num_chunks * steps_per_chunk)

        stacked = train_members(arch, dataset, seeds, recipe, on_step=chunk_step)
        metrics = evaluate_members(arch, stacked, dataset, recipe, seeds)
        name, sha256 = write_chunk(directory, index, stacked)
        record = ChunkRecord(name, first, len(seeds), sha256, time.perf_counter() - started)
        manifest.chunks.append(record)
        manifest.members.extend(m.to_dict() for m in metrics)
        manifest.build_wall_time_s += record.wall_time_s
        if index == num_chunks - 1:
            manifest.complete = True
            manifest.content_hash = content_hash(manifest)
        write_manifest(directory, manifest)
        if on_chunk is not None:
            on_chunk(record)
    return manifest

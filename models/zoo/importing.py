"""Import networks trained elsewhere as a zoo: checkpoints -> mapped keys -> evaluated -> zoo format.

    SOURCE (models.zoo.checkpoints) --map keys (models.zoo.key_map)--> K state dicts of ARCH
      --stack (K, ...)--> evaluate on the dataset, fed as the members expect
      --> DIR in the zoo format (models.zoo.store), published whole

The input preprocessing the members were trained with is declared, never folded into their
weights: it becomes the zoo's input contract (`manifest.input`), which canonicalization,
generator building, the card and every job result carry, and the dataset is fed that way
whenever these members (or networks generated from them) are evaluated. What the members were
trained on is recorded as text, plus whether they saw the validation split (then no
validation figure about them is held out). Members get seeds 0..K-1: their order in SOURCE.
"""

import shlex
import time
from pathlib import Path

import torch

from contract.files import replace_directory
from contract.inputs import InputContract, Standardize
from models.architectures import get_architecture
from models.weightspace import stack_state_dicts
from models.zoo.build import default_chunk_size
from models.zoo.checkpoints import read_checkpoints
from models.zoo.datasets import load_dataset
from models.zoo.key_map import map_keys
from models.zoo.store import ZooError, ZooManifest, write_complete_zoo
from models.zoo.train import evaluate_members

NOT_STATED = "not stated at import"


def import_command(
    architecture: str,
    source: Path,
    out: Path,
    preprocessing: Standardize | None,
    trained_on: str,
    saw_validation: bool,
    rules: dict[str, str],
) -> str:
    """The `dwf zoo import` command line that repeats an import (the zoo's rebuild hint)."""
    words = ["dwf", "zoo", "import", architecture, str(source), "--out", str(out)]
    if preprocessing is not None:
        for name in ("scale", "mean", "std"):
            value = getattr(preprocessing, name)
            words += [f"--input-{name}", "FILE" if isinstance(value, list) else f"{value:g}"]
    if trained_on != NOT_STATED:
        words += ["--trained-on", trained_on]
    if saw_validation:
        words.append("--saw-validation")
    if rules:
        words += ["--key-map", ",".join(f"{k}={v}" for k, v in rules.items())]
    return shlex.join(words)


def import_zoo(
    architecture: str,
    source: str | Path,
    out: str | Path,
    preprocessing: Standardize | None = None,
    trained_on: str = NOT_STATED,
    saw_validation: bool = False,
    rules: dict[str, str] | None = None,
    allow_pickle: bool = False,
    chunk_size: int | None = None,
    data_dir: str | None = None,
) -> ZooManifest:
    """Import the members in `source` as a complete zoo of `architecture` at `out`.

    `preprocessing` is what the members expect (None: the dataset's own standardization);
    `rules` are explicit key-map rules (models.zoo.key_map). Raises ZooError, CheckpointError or
    KeyMapError (all ValueErrors) with the fix; `out` is written whole or not at all.
    """
    started = time.perf_counter()
    source, out = Path(source), Path(out)
    if out.exists() and any(out.iterdir()):
        raise ZooError(f"{out} is not empty; choose another --out, or delete it to import again")
    arch = get_architecture(architecture)
    reference = arch.build().state_dict()
    checkpoints = read_checkpoints(source, allow_pickle)
    first = checkpoints.members[0]
    shapes = {k: tuple(first[k].shape) for k in checkpoints.keys}
    mapping = map_keys(shapes, {k: tuple(v.shape) for k, v in reference.items()}, arch.name, rules)
    stacked = stack_state_dicts(
        [
            {new: member[old].to(reference[new].dtype) for old, new in mapping.items()}
            for member in checkpoints.members
        ]
    )
    stacked = {k: stacked[k] for k in reference}

    dataset = load_dataset(arch.dataset, data_dir, preprocessing)
    contract = dataset.input_contract(arch.input_shape, trained_on)
    contract = InputContract.model_validate(
        {
            **contract.model_dump(),
            "preprocessing": preprocessing or contract.preprocessing,
            "saw_validation": saw_validation,
        }
    )
    chunk_size = chunk_size or default_chunk_size(arch.name)
    seeds = list(range(len(checkpoints.members)))
    metrics = []
    for first_member in range(0, len(seeds), chunk_size):
        part = {k: v[first_member : first_member + chunk_size] for k, v in stacked.items()}
        metrics += evaluate_members(
            arch, part, dataset, None, seeds[first_member : first_member + chunk_size]
        )
    manifest = ZooManifest(
        architecture=arch.to_dict(),
        dataset={"name": dataset.name, "fingerprint": dataset.fingerprint},
        recipe={"imported": True, "trained_on": trained_on},
        seeds=seeds,
        chunk_size=chunk_size,
        members=[m.to_dict() for m in metrics],
        environment={"torch": torch.__version__, "threads": torch.get_num_threads()},
        imported={
            "source": str(source),
            "members": checkpoints.names,
            "key_map": {old: new for old, new in mapping.items() if old != new},
            "command": import_command(
                arch.name, source, out, preprocessing, trained_on, saw_validation, rules or {}
            ),
        },
        input=contract.model_dump(),
    )
    manifest.build_wall_time_s = time.perf_counter() - started
    replace_directory(out, lambda staging: write_complete_zoo(staging, manifest, stacked))
    return manifest

"""Reading a user's trained networks: a folder of per-member checkpoints or one stacked file.

SOURCE is either
- a folder of per-member files (CHECKPOINT_SUFFIXES), one network each, taken in natural name
  order (`member-2` before `member-10`); or
- one safetensors file whose tensors stack every member on a leading axis (K, ...), as a
  `dwf generate` result file does.

Torch files are read with `torch.load(weights_only=True)`: tensors and plain containers only,
no code runs. `allow_pickle` lifts that for files the user trusts (a pickled `nn.Module` then
gives its state dict). Training checkpoints are unwrapped: `{"state_dict": {...}, "epoch": 3}`,
`{"model": {...}}` and the other WRAPPER_KEYS, nested or not.

Key order: a torch state dict keeps its modules' registration order, which key mapping uses
(models.zoo.key_map); safetensors stores keys alphabetically, so they come in natural order.
"""

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

CHECKPOINT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt")
WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "net", "network", "module", "weights", "params")
StateDict = dict[str, torch.Tensor]


class CheckpointError(ValueError):
    """A checkpoint cannot be read as a state dict; the message names the file and the fix."""


@dataclass(frozen=True)
class Checkpoints:
    """The members found in SOURCE, each a state dict with the same keys in `keys` order."""

    members: list[StateDict]
    names: list[str]  # where each member came from: a file name, or "file.safetensors[k]"
    keys: list[str]  # stored order for torch files, natural order for safetensors
    ordered: bool  # True when `keys` is a torch state dict's module order


def natural_key(text: str) -> list[Any]:
    """Sort key that orders embedded numbers by value: fc2 < fc10, layers.9 < layers.10."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def unwrap(obj: Any, path: Path) -> StateDict:
    """The state dict inside a loaded checkpoint (a plain one, a wrapper dict, or an nn.Module)."""
    if isinstance(obj, torch.nn.Module):
        obj = obj.state_dict()
    while isinstance(obj, dict) and not all(isinstance(v, torch.Tensor) for v in obj.values()):
        inner = next((obj[k] for k in WRAPPER_KEYS if isinstance(obj.get(k), dict | torch.nn.Module)), None)
        if inner is None:
            found = ", ".join(f"{k!r}" for k in list(obj)[:8])
            raise CheckpointError(
                f"{path} holds a dict ({found}) that is neither a state dict of tensors nor wrapped "
                f"under one of {', '.join(WRAPPER_KEYS)}; save `model.state_dict()` instead"
            )
        obj = inner.state_dict() if isinstance(inner, torch.nn.Module) else inner
    if not isinstance(obj, dict) or not obj:
        raise CheckpointError(f"{path} holds no state dict ({type(obj).__name__}); save `model.state_dict()`")
    return dict(obj)


def read_torch_file(path: Path, allow_pickle: bool) -> StateDict:
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=not allow_pickle)
    except Exception as error:  # pickle's errors have no common base class
        if allow_pickle:
            raise CheckpointError(f"{path} is not a readable torch file ({error})") from None
        raise CheckpointError(
            f"{path} cannot be read without running pickled code ({type(error).__name__}: "
            f"{str(error).splitlines()[0]}); save `model.state_dict()` with torch.save or safetensors, "
            "or pass --allow-pickle if you trust the file"
        ) from None
    return unwrap(loaded, path)


def read_safetensors(path: Path) -> StateDict:
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as error:
        raise CheckpointError(f"{path} is not a readable safetensors file ({error})") from None
    return {k: tensors[k] for k in sorted(tensors, key=natural_key)}


def read_member_folder(folder: Path, allow_pickle: bool) -> Checkpoints:
    files = sorted(
        (p for p in folder.iterdir() if p.is_file() and p.suffix in CHECKPOINT_SUFFIXES),
        key=lambda p: natural_key(p.name),
    )
    if not files:
        raise CheckpointError(
            f"{folder} holds no checkpoint files ({', '.join(CHECKPOINT_SUFFIXES)}); put one file per "
            "member there, or pass one stacked .safetensors file"
        )
    members = [
        read_safetensors(p) if p.suffix == ".safetensors" else read_torch_file(p, allow_pickle) for p in files
    ]
    first = members[0]
    for path, member in zip(files[1:], members[1:], strict=True):
        if member.keys() != first.keys():
            differ = sorted(member.keys() ^ first.keys(), key=natural_key)[:5]
            raise CheckpointError(
                f"{path} has other keys than {files[0]} (differing: {', '.join(differ)}); every member "
                "must be a network of the same architecture"
            )
        for key, tensor in member.items():
            if tensor.shape != first[key].shape:
                raise CheckpointError(
                    f"{path}: {key} has shape {tuple(tensor.shape)}, {files[0].name} has "
                    f"{tuple(first[key].shape)}; every member must have the same shapes"
                )
    ordered = files[0].suffix != ".safetensors"
    keys = list(first) if ordered else sorted(first, key=natural_key)
    return Checkpoints(members, [p.name for p in files], keys, ordered)


def read_stacked_file(path: Path) -> Checkpoints:
    if path.suffix != ".safetensors":
        raise CheckpointError(
            f"{path}: a single SOURCE file must be a stacked .safetensors file (every tensor with a "
            "leading member axis); put per-member torch checkpoints in a folder instead"
        )
    stacked = read_safetensors(path)
    counts = {tuple(v.shape[:1]) for v in stacked.values()}
    if len(counts) != 1 or () in counts:
        sizes = ", ".join(f"{k} {tuple(v.shape)}" for k, v in list(stacked.items())[:4])
        raise CheckpointError(
            f"{path} is not a stacked file: its tensors do not share a leading member axis ({sizes}); "
            "stack the members' state dicts on a new first axis, or pass a folder of per-member files"
        )
    count = counts.pop()[0]
    members = [{k: v[i] for k, v in stacked.items()} for i in range(count)]
    return Checkpoints(members, [f"{path.name}[{i}]" for i in range(count)], list(stacked), False)


def read_checkpoints(source: str | Path, allow_pickle: bool = False) -> Checkpoints:
    """Every member in SOURCE (see the module docstring); CheckpointError naming the fix otherwise."""
    source = Path(source)
    if source.is_dir():
        return read_member_folder(source, allow_pickle)
    if source.is_file():
        return read_stacked_file(source)
    raise CheckpointError(
        f"{source} does not exist: pass a folder of per-member checkpoints or a stacked file"
    )

"""Load a job's safetensors result as ready networks, or as one stacked ensemble run in a single pass.

File layout (DESIGN.md section 4): every state-dict entry of the architecture is stored
under its key with a leading ensemble axis of length `count`; `__metadata__` names the
architecture. torch and `models` are imported only when these functions are called, so
the HTTP client works without torch.
"""

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from torch import nn


@dataclass
class StackedEnsemble:
    """K networks of one architecture as stacked tensors: the functional form of an ensemble."""

    state: dict[str, "torch.Tensor"]  # every tensor (K, ...)
    metadata: dict[str, str]  # the file's __metadata__ (architecture, seed, job_id, ...)
    module: "nn.Module" = field(repr=False)  # supplies the architecture; its own weights are unused

    @property
    def count(self) -> int:
        return next(iter(self.state.values())).shape[0]

    @property
    def val_accuracy(self) -> list[float] | None:
        """Per-network validation accuracy the worker measured, when it did."""
        raw = self.metadata.get("val_accuracy")
        return None if raw is None else json.loads(raw)

    def forward(self, x: "torch.Tensor") -> "torch.Tensor":
        """All K networks on one batch at once, in eval mode: x (B, ...) -> logits (K, B, classes)."""
        from models.weightspace import batched_forward, eval_mode

        with eval_mode(self.module):
            return batched_forward(self.module, self.state, x)

    def networks(self) -> list["nn.Module"]:
        """K independent modules in eval mode, each holding its own copy of the weights."""
        device = next(iter(self.state.values())).device
        modules = []
        for index in range(self.count):
            module = _build(self.metadata["architecture"]).to(device)
            module.load_state_dict({key: value[index].clone() for key, value in self.state.items()})
            modules.append(module.eval())
        return modules


def _build(architecture: str) -> "nn.Module":
    from models.architectures import get_architecture

    return get_architecture(architecture).build()


def load_stacked(path: str | os.PathLike, device: str = "cpu") -> StackedEnsemble:
    """The result file at `path` as a StackedEnsemble on `device`."""
    from safetensors import safe_open

    from models.weightspace import check_state_dict

    with safe_open(str(Path(path)), framework="pt", device=device) as handle:
        metadata: dict[str, Any] = handle.metadata() or {}
        state = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118 - not a dict
    if "architecture" not in metadata:
        raise ValueError(f"{path} is not a DeepWeightFlow result: its metadata names no architecture")
    module = _build(metadata["architecture"]).to(device)
    check_state_dict(state, module.state_dict(), stacked=True)
    return StackedEnsemble(state, metadata, module)


def load_ensemble(path: str | os.PathLike, device: str = "cpu") -> list["nn.Module"]:
    """The result file at `path` as a list of ready `nn.Module`s in eval mode, one per generated network."""
    return load_stacked(path, device).networks()

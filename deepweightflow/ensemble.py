"""Load a job's safetensors result as ready networks, or as one stacked ensemble run in a single pass.

File layout (DESIGN.md section 4): every state-dict entry of the architecture is stored
under its key with a leading ensemble axis of length `count`; `__metadata__` names the
architecture and carries the input contract (contract.inputs), so raw inputs can be fed
with `preprocess` (or modules built with `with_preprocessing=True`). torch and `models`
are imported only when these functions are called, so the HTTP client works without torch.
"""

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from contract.result_file import ResultMetadata

if TYPE_CHECKING:
    import torch
    from torch import nn

    from contract.inputs import InputContract


@dataclass
class StackedEnsemble:
    """K networks of one architecture as stacked tensors: the functional form of an ensemble."""

    state: dict[str, "torch.Tensor"]  # every tensor (K, ...)
    metadata: ResultMetadata  # the file's metadata (architecture, seed, job_id, input contract, ...)
    module: "nn.Module" = field(repr=False)  # supplies the architecture; its own weights are unused

    @property
    def count(self) -> int:
        return next(iter(self.state.values())).shape[0]

    @property
    def val_accuracy(self) -> list[float] | None:
        """Per-network validation accuracy the worker measured, when it did."""
        return self.metadata.val_accuracy

    @property
    def input_contract(self) -> "InputContract":
        """What raw input the networks take and how it is preprocessed."""
        if self.metadata.input_contract is None:
            raise ValueError("this result file predates input contracts: regenerate it to get one")
        return self.metadata.input_contract

    def preprocess(self, raw: "torch.Tensor") -> "torch.Tensor":
        """Raw inputs (N, *shape) as the dataset stores them -> the networks' inputs (N, *shape)."""
        from deepweightflow.preprocessing import Preprocess

        device = next(iter(self.state.values())).device
        return Preprocess(self.input_contract).to(device)(raw.to(device))

    def forward(self, x: "torch.Tensor") -> "torch.Tensor":
        """All K networks on one preprocessed batch, in eval mode: x (B, ...) -> logits (K, B, classes)."""
        from models.weightspace import batched_forward, eval_mode

        with eval_mode(self.module):
            return batched_forward(self.module, self.state, x)

    def predict(self, raw: "torch.Tensor") -> "torch.Tensor":
        """Raw inputs (B, *shape) -> logits (K, B, classes): `forward(preprocess(raw))` without gradients."""
        import torch

        with torch.no_grad():
            return self.forward(self.preprocess(raw))

    def networks(self, with_preprocessing: bool = False) -> list["nn.Module"]:
        """K independent modules in eval mode, each holding its own copy of the weights; with
        `with_preprocessing` each takes raw inputs (a `Preprocess` module in front)."""
        from torch import nn

        from deepweightflow.preprocessing import Preprocess

        device = next(iter(self.state.values())).device
        modules = []
        for index in range(self.count):
            module = _build(self.metadata.architecture).to(device)
            module.load_state_dict({key: value[index].clone() for key, value in self.state.items()})
            if with_preprocessing:
                module = nn.Sequential(Preprocess(self.input_contract).to(device), module)
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
        strings = handle.metadata() or {}
        state = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118 - not a dict
    if "architecture" not in strings:
        raise ValueError(f"{path} is not a DeepWeightFlow result: its metadata names no architecture")
    module = _build(strings["architecture"]).to(device)
    check_state_dict(state, module.state_dict(), stacked=True)
    return StackedEnsemble(state, ResultMetadata.from_strings(strings), module)


def load_ensemble(
    path: str | os.PathLike, device: str = "cpu", with_preprocessing: bool = False
) -> list["nn.Module"]:
    """The result file at `path` as a list of ready `nn.Module`s in eval mode, one per generated
    network; with `with_preprocessing` each takes raw inputs as the file's input contract describes."""
    return load_stacked(path, device).networks(with_preprocessing)

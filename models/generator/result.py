"""A generated ensemble and its job-result file (DESIGN.md section 4)."""

from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import save_file

from contract.result_file import ResultMetadata


@dataclass
class GeneratedEnsemble:
    state: dict[str, torch.Tensor]  # stacked state dict, every tensor (count, ...) on CPU
    metadata: ResultMetadata  # who made it, how, the validation accuracies, the input contract

    @property
    def val_accuracy(self) -> torch.Tensor | None:
        """(count,) accuracy in [0, 1] on the artifact's validation batch, when measured."""
        accuracy = self.metadata.val_accuracy
        return None if accuracy is None else torch.tensor(accuracy, dtype=torch.float64)


def write_result(path: Path, ensemble: GeneratedEnsemble) -> None:
    """Write the result file at `path` (once; publish it with contract.files.atomic_write or a
    result store). A failed write (directory missing or read-only, disk full) raises OSError."""
    try:
        save_file(ensemble.state, str(path), metadata=ensemble.metadata.to_strings())
    except SafetensorError as error:  # how safetensors reports a failed write
        raise OSError(f"cannot write {path}: {error}") from error

"""Raw inputs -> what a generated network takes, built from a result file's input contract.

Preprocess(contract)(x): x (N, *shape) raw values -> float32 (N, *shape), (x / scale - mean) / std
"""

import math
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from contract.inputs import InputContract


class Preprocess(nn.Module):
    """The exact preprocessing the networks were trained with (mean/std scalar or per feature)."""

    def __init__(self, contract: "InputContract"):
        super().__init__()
        self.shape = tuple(contract.shape)
        features = math.prod(self.shape)
        standardize = contract.preprocessing
        self.scale = float(standardize.scale)
        self.register_buffer("mean", torch.as_tensor(standardize.mean, dtype=torch.float32).expand(features))
        self.register_buffer("std", torch.as_tensor(standardize.std, dtype=torch.float32).expand(features))

    def forward(self, raw: torch.Tensor) -> torch.Tensor:
        """raw (N, *shape) or (N, prod(shape)) of any numeric dtype -> float32 (N, *shape)."""
        if raw.shape[1:] != self.shape and math.prod(raw.shape[1:]) != self.mean.numel():
            raise ValueError(
                f"inputs of shape {tuple(raw.shape)} do not fit the networks' input {self.shape} "
                f"(expected (N, {', '.join(map(str, self.shape))}))"
            )
        flat = raw.reshape(len(raw), -1).to(torch.float32) / self.scale
        return ((flat - self.mean) / self.std).reshape(len(raw), *self.shape)

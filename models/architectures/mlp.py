"""Multi-layer perceptron on flattened inputs."""

from dataclasses import dataclass

import torch
from torch import nn

ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh}


@dataclass(frozen=True)
class MLPConfig:
    in_features: int = 784  # flattened input size (28*28 for Fashion-MNIST)
    hidden: tuple[int, ...] = (128, 128)  # width of each hidden layer
    num_classes: int = 10
    activation: str = "relu"  # one of ACTIVATIONS


class MLP(nn.Module):
    """Linear layers `layers.0 ... layers.L` with an activation between them.

    Input (B, ...) is flattened to (B, in_features); output is (B, num_classes).
    """

    def __init__(self, config: MLPConfig):
        super().__init__()
        if config.activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {config.activation!r}; choose one of {sorted(ACTIVATIONS)}")
        self.config = config
        widths = [config.in_features, *config.hidden, config.num_classes]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths, widths[1:], strict=False))
        self.act = ACTIVATIONS[config.activation]()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        for layer in self.layers[:-1]:
            x = self.act(layer(x))
        return self.layers[-1](x)

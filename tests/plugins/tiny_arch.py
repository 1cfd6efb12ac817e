"""A user's architecture, defined outside the project: a tiny residual CNN with its own key names.

Found as `tests.plugins.tiny_arch:tiny_resnet` (a `module:factory` path) or through an entry point
(tests/models/test_plugin_architecture.py). Its permutation spec is traced, never written by hand.
"""

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from models.architectures import Architecture


@dataclass(frozen=True)
class TinyResNetConfig:
    width: int = 8  # channels of the stem and the residual block
    hidden: int = 16  # units of the hidden layer of the head
    num_classes: int = 10


class TinyResNet(nn.Module):
    """(B, 1, 8, 8) -> (B, num_classes): conv stem, one residual block of two convs, pooling, MLP head."""

    def __init__(self, config: TinyResNetConfig):
        super().__init__()
        w = config.width
        self.entry = nn.Conv2d(1, w, 3, padding=1, bias=False)
        self.entry_norm = nn.BatchNorm2d(w)
        self.expand = nn.Conv2d(w, 2 * w, 3, padding=1)
        self.expand_norm = nn.BatchNorm2d(2 * w)
        self.project = nn.Conv2d(2 * w, w, 1)
        self.project_norm = nn.BatchNorm2d(w)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.hidden = nn.Linear(w, config.hidden)
        self.classify = nn.Linear(config.hidden, config.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.entry_norm(self.entry(x)))
        branch = F.relu(self.expand_norm(self.expand(x)))
        x = F.relu(x + self.project_norm(self.project(branch)))
        x = self.pool(x).flatten(1)
        return self.classify(F.gelu(self.hidden(x)))


def tiny_resnet() -> Architecture:
    """The architecture factory: name, family, config, dataset, input shape and module class."""
    return Architecture(
        name="tiny-resnet-digits",
        family="tiny-resnet",
        config=TinyResNetConfig(),
        dataset="digits",
        input_shape=(1, 8, 8),
        builder=TinyResNet,
    )


@dataclass(frozen=True)
class TinyMLPConfig:
    in_features: int = 64  # 8x8 digits, flattened
    width: int = 32  # the residual stream
    expansion: int = 48  # units inside the residual block
    num_classes: int = 10


class TinyResidualMLP(nn.Module):
    """(B, 1, 8, 8) -> (B, num_classes): embed, one pre-norm residual MLP block, classify."""

    def __init__(self, config: TinyMLPConfig):
        super().__init__()
        self.embed = nn.Linear(config.in_features, config.width)
        self.norm = nn.LayerNorm(config.width)
        self.up = nn.Linear(config.width, config.expansion)
        self.down = nn.Linear(config.expansion, config.width)
        self.classify = nn.Linear(config.width, config.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.gelu(self.embed(x.flatten(1)))
        h = h + self.down(F.relu(self.up(self.norm(h))))
        return self.classify(h)


def tiny_mlp() -> Architecture:
    return Architecture("tiny-mlp-digits", "tiny-mlp", TinyMLPConfig(), "digits", (1, 8, 8), TinyResidualMLP)

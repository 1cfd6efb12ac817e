"""Architecture factories a user might get wrong, each refused with the fix (test_plugin_architecture.py)."""

from dataclasses import dataclass, replace

import torch
from torch import nn

from models.architectures import Architecture
from tests.plugins.tiny_arch import tiny_mlp


@dataclass
class MutableConfig:
    width: int = 4


def not_an_architecture() -> nn.Module:
    return nn.Linear(4, 2)


def without_builder() -> Architecture:
    return replace(tiny_mlp(), builder=None)


def shadowing_a_registered_name() -> Architecture:
    return replace(tiny_mlp(), name="mlp-digits")


def mutable_config() -> Architecture:
    return replace(tiny_mlp(), config=MutableConfig())


class FlattensAFeatureMap(nn.Module):
    """A LeNet-style head: flattening an unpooled 6x6 map spreads each channel over 36 inputs."""

    def __init__(self, config: object) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.fc = nn.Linear(4 * 6 * 6, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x).relu().flatten(1))


def untraceable() -> Architecture:
    return replace(tiny_mlp(), name="lenet-digits", builder=FlattensAFeatureMap)

"""Plain convolutional networks: conv-BN-ReLU-maxpool blocks, global pooling, linear head.

`CNN` reads images (B, C, H, W) with 3x3 kernels; `CNN1d` reads 1-D signals (B, C, L) with
kernels of `kernel_size` samples. Both name their blocks `blocks.i.{conv,bn}` and their
classifier `head`, so one permutation spec shape serves both (models.canon.spec).
"""

from dataclasses import dataclass

import torch
from torch import nn

CONV = {1: nn.Conv1d, 2: nn.Conv2d}
BATCHNORM = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d}
MAX_POOL = {1: nn.functional.max_pool1d, 2: nn.functional.max_pool2d}


@dataclass(frozen=True)
class CNNConfig:
    in_channels: int = 1
    channels: tuple[int, ...] = (16, 32, 32)  # output channels of each block
    num_classes: int = 10


@dataclass(frozen=True)
class CNN1dConfig:
    in_channels: int = 1
    channels: tuple[int, ...] = (32, 32, 32)  # output channels of each block
    kernel_size: int = 5  # odd: "same" padding keeps the length until each pool halves it
    num_classes: int = 10


class ConvBlock(nn.Module):
    """Conv (no bias: BatchNorm supplies it) -> BatchNorm -> ReLU -> max-pool by 2 along each axis."""

    def __init__(self, c_in: int, c_out: int, dims: int = 2, kernel_size: int = 3):
        super().__init__()
        self.conv = CONV[dims](c_in, c_out, kernel_size, padding=kernel_size // 2, bias=False)
        self.bn = BATCHNORM[dims](c_out)
        self.pool = MAX_POOL[dims]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(torch.relu(self.bn(self.conv(x))), 2)


class ConvNet(nn.Module):
    """Input (B, C, *spatial) with `dims` spatial axes -> logits (B, num_classes)."""

    def __init__(self, widths: list[int], num_classes: int, dims: int, kernel_size: int):
        super().__init__()
        self.blocks = nn.Sequential(
            *(ConvBlock(a, b, dims, kernel_size) for a, b in zip(widths, widths[1:], strict=False))
        )
        self.head = nn.Linear(widths[-1], num_classes)
        self.spatial_axes = tuple(range(2, 2 + dims))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(x).mean(dim=self.spatial_axes))


class CNN(ConvNet):
    """Images (B, C, H, W) -> logits (B, num_classes); 3x3 kernels."""

    def __init__(self, config: CNNConfig):
        super().__init__([config.in_channels, *config.channels], config.num_classes, dims=2, kernel_size=3)
        self.config = config


class CNN1d(ConvNet):
    """Signals (B, C, L) -> logits (B, num_classes); L must survive one halving per block."""

    def __init__(self, config: CNN1dConfig):
        super().__init__(
            [config.in_channels, *config.channels], config.num_classes, dims=1, kernel_size=config.kernel_size
        )
        self.config = config

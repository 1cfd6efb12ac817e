"""Plain convolutional network: conv-BN-ReLU-maxpool blocks, global pooling, linear head."""

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class CNNConfig:
    in_channels: int = 1
    channels: tuple[int, ...] = (16, 32, 32)  # output channels of each block
    num_classes: int = 10


class ConvBlock(nn.Module):
    """3x3 conv (no bias: BatchNorm supplies it) -> BatchNorm -> ReLU -> 2x2 max-pool."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.max_pool2d(torch.relu(self.bn(self.conv(x))), 2)


class CNN(nn.Module):
    """Input (B, C, H, W) -> logits (B, num_classes). Blocks are `blocks.i.{conv,bn}`."""

    def __init__(self, config: CNNConfig):
        super().__init__()
        self.config = config
        widths = [config.in_channels, *config.channels]
        self.blocks = nn.Sequential(*(ConvBlock(a, b) for a, b in zip(widths, widths[1:], strict=False)))
        self.head = nn.Linear(widths[-1], config.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(x).mean(dim=(2, 3)))

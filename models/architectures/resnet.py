"""CIFAR-style ResNet (He et al. 2016, section 4.2) with basic blocks.

`stage_blocks=(3, 3, 3)` and `base_width=16` is ResNet-20; `(2, 2, 2, 2)` with
`base_width=64` is the CIFAR ResNet-18. Stage s has `base_width * 2**s`
channels; every stage after the first halves the resolution. A block whose
shape changes gets a 1x1-conv + BatchNorm shortcut, otherwise the identity.
"""

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class ResNetConfig:
    in_channels: int = 3
    stage_blocks: tuple[int, ...] = (3, 3, 3)  # basic blocks per stage (ResNet-20)
    base_width: int = 16  # channels of the stem and the first stage
    num_classes: int = 10

    def stage_width(self, stage: int) -> int:
        return self.base_width * 2**stage


def conv_bn(c_in: int, c_out: int, kernel: int, stride: int) -> tuple[nn.Conv2d, nn.BatchNorm2d]:
    conv = nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=False)
    return conv, nn.BatchNorm2d(c_out)


class BasicBlock(nn.Module):
    """conv1-bn1-relu-conv2-bn2, plus shortcut, then relu. `shortcut` is empty for identity."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1, self.bn1 = conv_bn(c_in, c_out, 3, stride)
        self.conv2, self.bn2 = conv_bn(c_out, c_out, 3, 1)
        needs_projection = stride != 1 or c_in != c_out
        self.shortcut = (
            nn.Sequential(*conv_bn(c_in, c_out, 1, stride)) if needs_projection else nn.Sequential()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """Input (B, C, H, W) -> logits (B, num_classes).

    Keys: `stem.{conv,bn}`, `stages.s.b.{conv1,bn1,conv2,bn2,shortcut.0,shortcut.1}`, `head`.
    """

    def __init__(self, config: ResNetConfig):
        super().__init__()
        self.config = config
        self.stem = nn.Module()
        self.stem.conv, self.stem.bn = conv_bn(config.in_channels, config.base_width, 3, 1)
        stages, c_in = [], config.base_width
        for s, n_blocks in enumerate(config.stage_blocks):
            c_out = config.stage_width(s)
            blocks = [
                BasicBlock(c_in if b == 0 else c_out, c_out, 2 if (b == 0 and s > 0) else 1)
                for b in range(n_blocks)
            ]
            stages.append(nn.Sequential(*blocks))
            c_in = c_out
        self.stages = nn.Sequential(*stages)
        self.head = nn.Linear(c_in, config.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.stem.bn(self.stem.conv(x)))
        return self.head(self.stages(x).mean(dim=(2, 3)))

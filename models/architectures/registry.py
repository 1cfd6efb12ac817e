"""Named architecture configurations: the vocabulary users and artifacts share."""

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from torch import nn

from .cnn import CNN, CNN1d, CNN1dConfig, CNNConfig
from .mlp import MLP, MLPConfig
from .resnet import ResNet, ResNetConfig
from .vit import ViT, ViTConfig

FAMILIES: dict[str, tuple[type, type[nn.Module]]] = {
    "mlp": (MLPConfig, MLP),
    "cnn": (CNNConfig, CNN),
    "cnn1d": (CNN1dConfig, CNN1d),
    "resnet": (ResNetConfig, ResNet),
    "vit": (ViTConfig, ViT),
}


class UnknownArchitectureError(ValueError):
    """Raised for an architecture name that is neither registered nor provided by a plugin."""


@dataclass(frozen=True)
class Architecture:
    name: str
    family: str  # key of FAMILIES, or a plugin's own family name
    config: Any  # the family's Config dataclass (frozen)
    dataset: str  # dataset the registered zoo is trained on ("digits", "fashion-mnist", ...)
    input_shape: tuple[int, ...]  # one example, without the batch axis
    # A plugin's module class (config -> nn.Module); its permutation spec is traced
    # (models.canon.trace). None: FAMILIES[family] and its hand-written spec.
    builder: Callable[[Any], nn.Module] | None = None

    def build(self) -> nn.Module:
        """A freshly initialized module (use torch.manual_seed first for determinism)."""
        return (self.builder or FAMILIES[self.family][1])(self.config)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "family": self.family,
            "config": asdict(self.config),
            "dataset": self.dataset,
            "input_shape": list(self.input_shape),
        }


ARCHITECTURES: dict[str, Architecture] = {
    a.name: a
    for a in [
        Architecture("mlp-digits", "mlp", MLPConfig(in_features=64, hidden=(32, 32)), "digits", (1, 8, 8)),
        # The reference paper's Fashion-MNIST zoo: 784-128-128-10.
        Architecture(
            "mlp-fashion", "mlp", MLPConfig(in_features=784, hidden=(128, 128)), "fashion-mnist", (1, 28, 28)
        ),
        Architecture(
            "cnn-fashion",
            "cnn",
            CNNConfig(in_channels=1, channels=(16, 32, 32)),
            "fashion-mnist",
            (1, 28, 28),
        ),
        # ResNet-20 layout at half width (8-16-32 channels) so a zoo trains on CPU.
        Architecture(
            "resnet20-fashion",
            "resnet",
            ResNetConfig(in_channels=1, stage_blocks=(3, 3, 3), base_width=8),
            "fashion-mnist",
            (1, 28, 28),
        ),
        Architecture("vit-fashion", "vit", ViTConfig(), "fashion-mnist", (1, 28, 28)),
        # Tabular: 30 standardized features of scikit-learn's breast cancer table, 2 classes.
        Architecture(
            "mlp-breast-cancer",
            "mlp",
            MLPConfig(in_features=30, hidden=(16, 16), num_classes=2),
            "breast-cancer",
            (30,),
        ),
        # 1-D sequences: MNIST-1D's 40-sample signals (one channel), 10 classes. Three hidden
        # layers: as accurate as two of 256 (~67%, an MLP's ceiling on MNIST-1D) at half the size.
        Architecture(
            "mlp-mnist1d",
            "mlp",
            MLPConfig(in_features=40, hidden=(128, 128, 128), num_classes=10),
            "mnist1d",
            (1, 40),
        ),
        # The same signals through three conv-BN-ReLU-pool blocks of 32 channels (kernel 5, global
        # average pooling): ~98% where an MLP stops at ~67%, at a quarter of its size.
        Architecture("cnn-mnist1d", "cnn1d", CNN1dConfig(), "mnist1d", (1, 40)),
        # ResNet-18-sized (11.2M parameters) for benchmarks only; no zoo is trained for it.
        Architecture(
            "resnet18-cifar",
            "resnet",
            ResNetConfig(in_channels=3, stage_blocks=(2, 2, 2, 2), base_width=64),
            "cifar10",
            (3, 32, 32),
        ),
    ]
}

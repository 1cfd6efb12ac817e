"""Registry and architecture construction."""

import pytest
import torch

from models.architectures import ARCHITECTURES, UnknownArchitectureError, get_architecture


def test_unknown_architecture_lists_known_names():
    with pytest.raises(UnknownArchitectureError) as info:
        get_architecture("mlp-imagenet")
    message = str(info.value)
    assert "mlp-imagenet" in message
    for name in ARCHITECTURES:
        assert name in message


@pytest.mark.parametrize("name", [n for n in ARCHITECTURES if n != "resnet18-cifar"])
def test_forward_shape_and_seeded_init(name):
    arch = get_architecture(name)
    torch.manual_seed(0)
    a = arch.build()
    torch.manual_seed(0)
    b = arch.build()
    x = torch.randn(3, *arch.input_shape)
    out = a(x)
    assert out.shape == (3, arch.config.num_classes)
    assert torch.equal(out, b(x)), "same seed must give the same network"


def test_resnet_shortcuts_and_size():
    arch = get_architecture("resnet20-fashion")
    model = arch.build()
    keys = model.state_dict().keys()
    # ResNet-20: 3 stages x 3 blocks; a 1x1 projection only where the width or resolution changes.
    projections = sorted({k.split(".shortcut")[0] for k in keys if ".shortcut.0.weight" in k})
    assert projections == ["stages.1.0", "stages.2.0"]
    resnet18 = get_architecture("resnet18-cifar").build()
    assert 11_000_000 < sum(p.numel() for p in resnet18.parameters()) < 11_300_000


def test_vit_rejects_bad_geometry():
    from models.architectures.vit import ViT, ViTConfig

    with pytest.raises(ValueError, match="multiple"):
        ViT(ViTConfig(image_size=28, patch_size=5))

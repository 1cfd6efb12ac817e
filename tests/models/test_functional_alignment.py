"""Functional alignment of ViTs: its moves are exact symmetries, and it undoes a disguise made of them."""

import torch

from models.architectures import get_architecture
from models.canon.functional_alignment import (
    fold_layernorms,
    functional_align,
    mean_free_basis,
    nearest_orthogonal,
    rotate_stream,
)

VIT = get_architecture("vit-fashion")
CONFIG = VIT.config


def network(seed: int) -> dict[str, torch.Tensor]:
    """A ViT with non-trivial LayerNorm gains and biases (a fresh one has 1 and 0)."""
    torch.manual_seed(seed)
    state = VIT.build().state_dict()
    for name, tensor in state.items():
        if "norm" in name:
            state[name] = tensor + 0.3 * torch.randn_like(tensor)
    return state


def logits(state: dict[str, torch.Tensor], images: torch.Tensor) -> torch.Tensor:
    module = VIT.build().eval()
    module.load_state_dict(state)
    with torch.no_grad():
        return module(images)


def stream_rotation(seed: int) -> torch.Tensor:
    """A random orthogonal (dim, dim) that fixes the all-ones vector."""
    generator = torch.Generator().manual_seed(seed)
    basis = mean_free_basis(CONFIG.dim)
    inner = nearest_orthogonal(torch.randn(CONFIG.dim - 1, CONFIG.dim - 1, generator=generator))
    ones = torch.full((CONFIG.dim, 1), CONFIG.dim**-0.5)
    return ones @ ones.T + basis @ inner @ basis.T


def disguise(state: dict[str, torch.Tensor], seed: int) -> dict[str, torch.Tensor]:
    """The same function: stream rotated, MLP units and heads permuted, each head's q/k and v rotated."""
    generator = torch.Generator().manual_seed(seed)
    out = rotate_stream(fold_layernorms(state, CONFIG), CONFIG, stream_rotation(seed))
    head_dim = CONFIG.dim // CONFIG.heads
    for i in range(CONFIG.depth):
        block = f"blocks.{i}"
        units = torch.randperm(CONFIG.mlp_dim, generator=generator)
        for name in ("weight", "bias"):
            out[f"{block}.fc1.{name}"] = out[f"{block}.fc1.{name}"][units]
        out[f"{block}.fc2.weight"] = out[f"{block}.fc2.weight"][:, units]
        heads = torch.randperm(CONFIG.heads, generator=generator)
        rows = torch.cat([torch.arange(h * head_dim, (h + 1) * head_dim) for h in heads.tolist()])
        turn = [nearest_orthogonal(torch.randn(head_dim, head_dim, generator=generator)) for _ in range(2)]
        every_head = {name: torch.block_diag(*[turn[name == "v"]] * CONFIG.heads) for name in "qkv"}
        for name in "qkv":
            weight, bias = out[f"{block}.attn.{name}.weight"][rows], out[f"{block}.attn.{name}.bias"][rows]
            out[f"{block}.attn.{name}.weight"] = every_head[name] @ weight
            out[f"{block}.attn.{name}.bias"] = every_head[name] @ bias
        out[f"{block}.attn.o.weight"] = out[f"{block}.attn.o.weight"][:, rows] @ every_head["v"].T
    return out


def test_folding_layernorms_and_rotating_the_stream_keep_the_function() -> None:
    images = torch.randn(16, 1, 28, 28)
    state = network(0)
    folded = fold_layernorms(state, CONFIG)
    assert torch.equal(folded["norm.weight"], torch.ones(CONFIG.dim))
    assert torch.allclose(logits(folded, images), logits(state, images), atol=1e-4)
    rotated = rotate_stream(folded, CONFIG, stream_rotation(1))
    assert not torch.allclose(rotated["pos_embed"], folded["pos_embed"], atol=1e-3)
    assert torch.allclose(logits(rotated, images), logits(state, images), atol=1e-4)
    unfolded_rotation = rotate_stream(state, CONFIG, stream_rotation(1))  # LayerNorm gains break it
    assert not torch.allclose(logits(unfolded_rotation, images), logits(state, images), atol=1e-2)


def test_functional_alignment_undoes_a_disguise_of_the_reference() -> None:
    images = torch.randn(64, 1, 28, 28)
    original = network(0)
    disguised = disguise(original, seed=3)
    assert torch.allclose(logits(disguised, images), logits(original, images), atol=1e-4)
    distance = lambda a, b: sum(float((a[k] - b[k]).square().sum()) for k in a) ** 0.5  # noqa: E731
    folded = fold_layernorms(original, CONFIG)
    assert distance(disguised, folded) > 5.0
    stacked = {k: torch.stack([folded[k], disguised[k]]) for k in folded}
    aligned = functional_align(VIT, stacked, images, reference=0, rounds=1)
    first, second = ({k: v[i] for k, v in aligned.items()} for i in range(2))
    assert distance(first, second) < 1e-3 * distance(disguised, folded)
    assert torch.allclose(logits(second, images), logits(original, images), atol=1e-4)

"""Vision Transformer (Dosovitskiy et al. 2021): patch embedding, class token,
learned positions, pre-norm blocks with multi-head self-attention and an MLP."""

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class ViTConfig:
    image_size: int = 28
    patch_size: int = 7  # image_size must be a multiple of it
    in_channels: int = 1
    dim: int = 32  # width of the residual stream
    depth: int = 2  # number of transformer blocks
    heads: int = 4  # attention heads; dim must be a multiple of it
    mlp_dim: int = 64  # hidden width of each block's MLP
    num_classes: int = 10

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2


class Attention(nn.Module):
    """Multi-head self-attention with separate `q`, `k`, `v`, `o` projections.

    Head h owns rows h*head_dim:(h+1)*head_dim of q, k, v and the same columns of o.
    (B, T, dim) -> (B, T, dim).
    """

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim) for _ in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        split = lambda y: y.view(b, t, self.heads, d // self.heads).transpose(1, 2)  # noqa: E731
        q, k, v = split(self.q(x)), split(self.k(x)), split(self.v(x))
        scores = q @ k.transpose(-2, -1) / (d // self.heads) ** 0.5  # (B, heads, T, T)
        out = (scores.softmax(dim=-1) @ v).transpose(1, 2).reshape(b, t, d)
        return self.o(out)


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_dim: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, mlp_dim)
        self.fc2 = nn.Linear(mlp_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.fc2(nn.functional.gelu(self.fc1(self.norm2(x))))


class ViT(nn.Module):
    """Input (B, C, H, W) -> logits (B, num_classes), read from the class token."""

    def __init__(self, config: ViTConfig):
        super().__init__()
        if config.image_size % config.patch_size or config.dim % config.heads:
            raise ValueError("image_size must be a multiple of patch_size and dim of heads")
        self.config = config
        patch_dim = config.in_channels * config.patch_size**2
        self.patch_embed = nn.Linear(patch_dim, config.dim)
        self.cls_token = nn.Parameter(torch.randn(1, 1, config.dim) * 0.02)
        self.pos_embed = nn.Parameter(torch.randn(1, config.num_patches + 1, config.dim) * 0.02)
        self.blocks = nn.Sequential(
            *(Block(config.dim, config.heads, config.mlp_dim) for _ in range(config.depth))
        )
        self.norm = nn.LayerNorm(config.dim)
        self.head = nn.Linear(config.dim, config.num_classes)

    def patchify(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, num_patches, C * patch_size**2)."""
        p = self.config.patch_size
        b, c, h, w = x.shape
        x = x.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5)
        return x.reshape(b, (h // p) * (w // p), c * p * p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.patch_embed(self.patchify(x))
        cls = self.cls_token.expand(tokens.shape[0], -1, -1)
        x = torch.cat([cls, tokens], dim=1) + self.pos_embed
        return self.head(self.norm(self.blocks(x))[:, 0])

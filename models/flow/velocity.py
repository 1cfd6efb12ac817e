"""Velocity network v(x, t) of the flow, and its safetensors file.

    x (B, d), t (B,) or (1,) in [0, 1] (one time for every row: the time features are computed once)
      -> in_proj(x) + time_mlp(sinusoids(t))                    (B, h)
      -> depth x residual block: h + up(drop(gelu(down(norm(h + time)))))
         with down: h -> h/2, up: h/2 -> h
      -> out(gelu(norm(h)))                                      (B, d)

The output layer starts at zero, so an untrained flow is the identity map
(it returns its noise) and training starts from a well-defined velocity 0.
The time features are added again at every block so that deep stacks keep
seeing t.
"""

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

FORMAT = "deepweightflow.velocity/1"


@dataclass(frozen=True)
class VelocityConfig:
    dim: int  # d, length of a code (PCA components, or D without PCA)
    hidden: int = 512  # h, width of the residual stream
    depth: int = 1  # number of residual bottleneck blocks h -> h/2 -> h
    time_embed_dim: int = 64  # number of sinusoidal time features (sin and cos halves)
    max_time_frequency: float = 1000.0  # angular frequencies span 1 ... this, geometrically
    dropout: float = 0.1  # inside each block; regularizes against memorizing a small zoo

    def __post_init__(self) -> None:
        if self.dim < 1 or self.hidden < 2 or self.depth < 0:
            raise ValueError(f"invalid VelocityConfig: {self}")
        if self.time_embed_dim < 2 or self.time_embed_dim % 2:
            raise ValueError(f"time_embed_dim must be a positive even number, got {self.time_embed_dim}")


class SinusoidalTimeEmbedding(nn.Module):
    """t (B,) -> [sin(w t), cos(w t)] (B, features), w geometric from 1 to max_frequency."""

    def __init__(self, features: int, max_frequency: float):
        super().__init__()
        frequencies = torch.exp(torch.linspace(0.0, math.log(max_frequency), features // 2))
        self.register_buffer("frequencies", frequencies, persistent=False)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        angles = t[:, None].float() * self.frequencies  # (B, features / 2)
        return torch.cat([angles.sin(), angles.cos()], dim=1)


class ResidualBlock(nn.Module):
    """h (B, hidden), time (B, hidden) -> h + MLP(LayerNorm(h + time)) with a hidden/2 bottleneck."""

    def __init__(self, hidden: int, dropout: float):
        super().__init__()
        self.norm = nn.LayerNorm(hidden)
        self.down = nn.Linear(hidden, hidden // 2)
        self.act = nn.GELU()
        self.drop = nn.Dropout(dropout)
        self.up = nn.Linear(hidden // 2, hidden)

    def forward(self, h: torch.Tensor, time: torch.Tensor) -> torch.Tensor:
        return h + self.up(self.drop(self.act(self.down(self.norm(h + time)))))


class VelocityMLP(nn.Module):
    """v(x (B, d), t (B,) or (1,)) -> (B, d); see the module docstring for the layout."""

    def __init__(self, config: VelocityConfig):
        super().__init__()
        self.config = config
        h = config.hidden
        self.time_embed = SinusoidalTimeEmbedding(config.time_embed_dim, config.max_time_frequency)
        self.time_mlp = nn.Sequential(nn.Linear(config.time_embed_dim, h), nn.GELU(), nn.Linear(h, h))
        self.in_proj = nn.Linear(config.dim, h)
        self.blocks = nn.ModuleList(ResidualBlock(h, config.dropout) for _ in range(config.depth))
        self.out_norm = nn.LayerNorm(h)
        self.out_act = nn.GELU()
        self.out = nn.Linear(h, config.dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        time = self.time_mlp(self.time_embed(t))  # (B, h) or (1, h), broadcast over the rows
        h = self.in_proj(x) + time
        for block in self.blocks:
            h = block(h, time)
        return self.out(self.out_act(self.out_norm(h)))


def save_velocity(
    model: VelocityMLP, path: str | Path, extra_metadata: Mapping[str, str] | None = None
) -> None:
    """Write the weights with the VelocityConfig (JSON) and any extra string metadata."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    metadata = {**(extra_metadata or {}), "format": FORMAT, "config": json.dumps(asdict(model.config))}
    save_file(tensors, str(path), metadata=metadata)


def load_velocity(path: str | Path, device: torch.device | str = "cpu") -> VelocityMLP:
    """Rebuild the network written by `save_velocity`, in eval mode on `device`."""
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
    if metadata.get("format") != FORMAT:
        raise ValueError(f"{path} is not a {FORMAT} file (format={metadata.get('format')!r})")
    model = VelocityMLP(VelocityConfig(**json.loads(metadata["config"])))
    model.load_state_dict(load_file(str(path)))
    return model.to(device).eval()

"""Permutation specs: which hidden-unit permutation acts on which axis of which tensor.

A spec is plain data, `state-dict key -> (perm name or None per tensor axis)`,
covering every entry of the state dict (BatchNorm running statistics included,
`num_batches_tracked` as `()`). Permuting every axis that carries perm `P` by the
same index vector leaves the network's function unchanged. Builders are tiny,
one per architecture family, and read only the family's Config.

Attention heads add structure: the q/k output axis and the v output / o input
axis of one block may only be permuted head-wise (a `HeadGroup`); see
`models.canon.transfusion`.
"""

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from models.architectures.cnn import CNN1dConfig, CNNConfig
from models.architectures.mlp import MLPConfig
from models.architectures.resnet import ResNetConfig
from models.architectures.vit import ViTConfig

Axes = tuple[str | None, ...]
BATCHNORM_ENTRIES = ("weight", "bias", "running_mean", "running_var")


@dataclass(frozen=True)
class HeadGroup:
    """The attention heads of one block, matched with TransFusion.

    Both perms move heads as wholes with ONE shared head permutation, then
    permute dimensions within each head (separately for qk and for vo).
    Head h owns indices h*head_dim:(h+1)*head_dim of both perms.
    """

    qk: str  # perm on the q and k output axis (size dim): q and k share it so scores are unchanged
    vo: str  # perm on the v output axis, which is also the o input axis
    num_heads: int


@dataclass(frozen=True)
class PermutationSpec:
    axes: dict[str, Axes]  # every state-dict key -> one perm name (or None) per tensor axis
    head_groups: tuple[HeadGroup, ...] = ()

    @cached_property
    def perm_to_axes(self) -> dict[str, list[tuple[str, int]]]:
        """perm name -> every (key, axis) it acts on, in key order."""
        out: dict[str, list[tuple[str, int]]] = {}
        for key, axes in self.axes.items():
            for axis, perm in enumerate(axes):
                if perm is not None:
                    out.setdefault(perm, []).append((key, axis))
        return out

    @property
    def perm_names(self) -> list[str]:
        return list(self.perm_to_axes)

    @cached_property
    def head_group_of(self) -> dict[str, HeadGroup]:
        """perm name -> its head group, for the perms that belong to one."""
        return {name: g for g in self.head_groups for name in (g.qk, g.vo)}


def batchnorm_axes(prefix: str, perm: str | None) -> dict[str, Axes]:
    """The five state-dict entries of a BatchNorm layer whose channels carry `perm`."""
    entries: dict[str, Axes] = {f"{prefix}.{name}": (perm,) for name in BATCHNORM_ENTRIES}
    entries[f"{prefix}.num_batches_tracked"] = ()
    return entries


def linear_axes(prefix: str, out_perm: str | None, in_perm: str | None) -> dict[str, Axes]:
    """weight (out, in) and bias (out,) of an nn.Linear."""
    return {f"{prefix}.weight": (out_perm, in_perm), f"{prefix}.bias": (out_perm,)}


def conv_axes(
    prefix: str, out_perm: str | None, in_perm: str | None, kernel_dims: int = 2
) -> dict[str, Axes]:
    """weight (out, in, *kernel) of a bias-free convolution with `kernel_dims` kernel axes."""
    return {f"{prefix}.weight": (out_perm, in_perm, *(None,) * kernel_dims)}


def mlp_spec(config: MLPConfig) -> PermutationSpec:
    """Hidden layer i's units carry perm `P_i`; input pixels and logits are fixed."""
    n_layers = len(config.hidden) + 1
    perm = [None, *(f"P_{i}" for i in range(len(config.hidden))), None]  # perm[i] = input of layer i
    axes: dict[str, Axes] = {}
    for i in range(n_layers):
        axes |= linear_axes(f"layers.{i}", perm[i + 1], perm[i])
    return PermutationSpec(axes)


def cnn_spec(config: CNNConfig | CNN1dConfig) -> PermutationSpec:
    """Block i's channels carry `P_i` (conv output, its BatchNorm, next conv input, head input)."""
    kernel_dims = 1 if isinstance(config, CNN1dConfig) else 2
    axes: dict[str, Axes] = {}
    previous = None
    for i in range(len(config.channels)):
        axes |= conv_axes(f"blocks.{i}.conv", f"P_{i}", previous, kernel_dims)
        axes |= batchnorm_axes(f"blocks.{i}.bn", f"P_{i}")
        previous = f"P_{i}"
    return PermutationSpec(axes | linear_axes("head", None, previous))


def resnet_spec(config: ResNetConfig) -> PermutationSpec:
    """One residual-stream perm per stage, shared along identity shortcuts.

    `res_s` is stage s's residual stream: the output of every block's conv2/bn2
    and of its projection shortcut. A block with a 1x1 projection shortcut starts
    a new residual perm (its shortcut maps the old perm to the new one). Each block
    has its own inner perm `stages.s.b.inner` between conv1/bn1 and conv2. The stem
    writes straight into stage 0's stream when stage 0 keeps its width.
    """
    first_projects = config.base_width != config.stage_width(0)
    residual = "stem" if first_projects else "res_0"
    axes: dict[str, Axes] = conv_axes("stem.conv", residual, None) | batchnorm_axes("stem.bn", residual)
    c_in = config.base_width
    for s, n_blocks in enumerate(config.stage_blocks):
        c_out = config.stage_width(s)
        for b in range(n_blocks):
            prefix, inner = f"stages.{s}.{b}", f"stages.{s}.{b}.inner"
            stride = 2 if (b == 0 and s > 0) else 1
            block_in = c_in if b == 0 else c_out
            incoming = residual
            if stride != 1 or block_in != c_out:  # same rule as BasicBlock: a projection shortcut
                residual = f"res_{s}"
                axes |= conv_axes(f"{prefix}.shortcut.0", residual, incoming)
                axes |= batchnorm_axes(f"{prefix}.shortcut.1", residual)
            axes |= conv_axes(f"{prefix}.conv1", inner, incoming) | batchnorm_axes(f"{prefix}.bn1", inner)
            axes |= conv_axes(f"{prefix}.conv2", residual, inner) | batchnorm_axes(f"{prefix}.bn2", residual)
        c_in = c_out
    return PermutationSpec(axes | linear_axes("head", None, residual))


def vit_spec(config: ViTConfig) -> PermutationSpec:
    """One residual-stream perm `res` for the whole ViT, plus per-block attention and MLP perms.

    Why one shared `res` rather than leaving the residual stream fixed: every
    operation on the stream is equivariant to a channel permutation applied
    everywhere at once. Additions and per-channel affine maps obviously are, and
    LayerNorm's mean and variance are sums over channels, hence permutation
    invariant, so permuting its input and its weight/bias permutes its output.
    The symmetry is therefore exact, and aligning the stream gives matching one
    more degree of freedom (dim! of them) than fixing it would.

    Per block i: `blocks.i.attn.qk` on q and k rows, `blocks.i.attn.vo` on v rows
    and o columns (together a HeadGroup with `config.heads` heads), and
    `blocks.i.mlp` on the MLP's hidden units.
    """
    res = "res"
    axes: dict[str, Axes] = {
        "cls_token": (None, None, res),
        "pos_embed": (None, None, res),
        **linear_axes("patch_embed", res, None),
    }
    groups = []
    for i in range(config.depth):
        p, qk, vo, hidden = f"blocks.{i}", f"blocks.{i}.attn.qk", f"blocks.{i}.attn.vo", f"blocks.{i}.mlp"
        axes |= {f"{p}.norm1.weight": (res,), f"{p}.norm1.bias": (res,)}
        axes |= linear_axes(f"{p}.attn.q", qk, res) | linear_axes(f"{p}.attn.k", qk, res)
        axes |= linear_axes(f"{p}.attn.v", vo, res) | linear_axes(f"{p}.attn.o", res, vo)
        axes |= {f"{p}.norm2.weight": (res,), f"{p}.norm2.bias": (res,)}
        axes |= linear_axes(f"{p}.fc1", hidden, res) | linear_axes(f"{p}.fc2", res, hidden)
        groups.append(HeadGroup(qk=qk, vo=vo, num_heads=config.heads))
    axes |= {"norm.weight": (res,), "norm.bias": (res,)}
    return PermutationSpec(axes | linear_axes("head", None, res), head_groups=tuple(groups))


SPEC_BUILDERS: dict[str, Callable[[Any], PermutationSpec]] = {
    "mlp": mlp_spec,
    "cnn": cnn_spec,
    "cnn1d": cnn_spec,
    "resnet": resnet_spec,
    "vit": vit_spec,
}

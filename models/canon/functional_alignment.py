"""Functional alignment of pre-norm ViTs: rotations, not only permutations.

Weight matching and TransFusion (models.canon.matching) search permutations. A
pre-norm transformer has more symmetry than that, and two independent runs of our
small ViT differ by it (README, "Canonicalization"):

- **the residual stream** can be rotated by any orthogonal Q that fixes the all-ones
  direction (Q 1 = 1), once every LayerNorm's gain and bias are folded into the
  linear layers that read its output (`fold_layernorms`): LayerNorm subtracts the
  mean (the ones direction) and divides by the norm of the rest, both unchanged by
  such a Q, so LN(Q x) = Q LN(x). Writers into the stream (patch embedding, class
  token, positions, attention output, MLP output) are multiplied by Q on the left,
  readers (q, k, v, fc1, head) by Q^T on the right (`rotate_stream`);
- **inside each attention head**, q and k can be rotated together by one orthogonal
  R (q.k is unchanged) and v by another S with o's columns by S^T;
- the MLP's hidden units can be permuted (GELU is elementwise).

`functional_align` solves each of these on activations, from the stream inwards:
the stream rotation by orthogonal Procrustes on stream activations at every write,
the MLP units by a linear assignment on the correlation of fc1 pre-activations, and
heads by a linear assignment whose cost is each head pair's Procrustes residual
(q and k jointly, then v). A zoo is aligned onto activation targets: round 1 a
reference member's, then the mean of the aligned members' activations. Every step is
an exact symmetry, so each member computes what it computed (tested).

Supported: `models.architectures.vit.ViT` (its state-dict names). Measured in
`bench/vit_alignment.py`: it halves the loss barrier between two runs where
TransFusion barely moves it, yet the generator trained on the result is no more
novel (README, "vit-fashion").
"""

from collections.abc import Mapping

import torch
from scipy.optimize import linear_sum_assignment
from torch import nn

from models.architectures import Architecture
from models.architectures.vit import ViTConfig
from models.weightspace import stack_state_dicts, unstack_state_dicts

StateDict = dict[str, torch.Tensor]


def _stream_writers(config: ViTConfig) -> list[str]:
    return ["patch_embed"] + [f"blocks.{i}.{name}" for i in range(config.depth) for name in ("attn.o", "fc2")]


def _layernorm_readers(config: ViTConfig) -> list[tuple[str, list[str]]]:
    """(LayerNorm, the linear layers reading its output)."""
    readers = []
    for i in range(config.depth):
        readers.append((f"blocks.{i}.norm1", [f"blocks.{i}.attn.{x}" for x in "qkv"]))
        readers.append((f"blocks.{i}.norm2", [f"blocks.{i}.fc1"]))
    return [*readers, ("norm", ["head"])]


def fold_layernorms(state: Mapping[str, torch.Tensor], config: ViTConfig) -> StateDict:
    """The same function with every LayerNorm's gain 1 and bias 0: a reader W of LN's output
    becomes W diag(gain), its bias gains W bias_LN."""
    out = dict(state)
    for norm, linears in _layernorm_readers(config):
        gain, shift = out[f"{norm}.weight"], out[f"{norm}.bias"]
        for linear in linears:
            weight = out[f"{linear}.weight"]
            out[f"{linear}.bias"] = out[f"{linear}.bias"] + weight @ shift
            out[f"{linear}.weight"] = weight * gain[None, :]
        out[f"{norm}.weight"], out[f"{norm}.bias"] = torch.ones_like(gain), torch.zeros_like(shift)
    return out


def rotate_stream(state: Mapping[str, torch.Tensor], config: ViTConfig, rotation: torch.Tensor) -> StateDict:
    """The network whose residual stream is `rotation` (dim, dim) @ this one's. Exact for a folded
    state (`fold_layernorms`) and an orthogonal rotation that fixes the all-ones vector."""
    out = dict(state)
    for name in ("cls_token", "pos_embed"):
        out[name] = out[name] @ rotation.T
    for writer in _stream_writers(config):
        out[f"{writer}.weight"] = rotation @ out[f"{writer}.weight"]
        out[f"{writer}.bias"] = rotation @ out[f"{writer}.bias"]
    for _, linears in _layernorm_readers(config):
        for reader in linears:
            out[f"{reader}.weight"] = out[f"{reader}.weight"] @ rotation.T
    return out


def nearest_orthogonal(matrix: torch.Tensor) -> torch.Tensor:
    """argmax_R trace(R^T matrix) over orthogonal R (the polar factor)."""
    left, _, right = torch.linalg.svd(matrix)
    return left @ right


def mean_free_basis(dim: int) -> torch.Tensor:
    """(dim, dim - 1) orthonormal basis of the vectors whose entries sum to 0."""
    ones = torch.full((dim, 1), dim**-0.5)
    return torch.linalg.svd(torch.eye(dim) - ones @ ones.T)[0][:, : dim - 1]


def activations(module: nn.Module, state: Mapping[str, torch.Tensor], images: torch.Tensor) -> StateDict:
    """What alignment compares, on `images` (N, C, H, W), T = tokens:

    `stream` (N*T*(2*depth+1), dim): the residual stream after the embedding and after every add;
    `i.q`, `i.k`, `i.v` (N*T, heads, head_dim) of block i; `i.fc1` (N*T, mlp_dim) pre-activations.
    """
    config: ViTConfig = module.config
    module.load_state_dict(state)
    module.eval()
    heads, head_dim = config.heads, config.dim // config.heads
    out: StateDict = {}
    with torch.no_grad():
        tokens = module.patch_embed(module.patchify(images))
        x = torch.cat([module.cls_token.expand(len(images), -1, -1), tokens], 1) + module.pos_embed
        stream = [x]
        for i, block in enumerate(module.blocks):
            normed = block.norm1(x)
            for name in "qkv":
                out[f"{i}.{name}"] = getattr(block.attn, name)(normed).reshape(-1, heads, head_dim)
            x = x + block.attn(normed)
            stream.append(x)
            out[f"{i}.fc1"] = block.fc1(block.norm2(x)).reshape(-1, config.mlp_dim)
            x = x + block.fc2(nn.functional.gelu(out[f"{i}.fc1"].view(*x.shape[:2], -1)))
            stream.append(x)
    out["stream"] = torch.cat([s.reshape(-1, config.dim) for s in stream])
    return out


def _standardized(values: torch.Tensor) -> torch.Tensor:
    return (values - values.mean(0)) / (values.std(0) + 1e-8)


def _align_mlp(state: StateDict, block: str, source: torch.Tensor, target: torch.Tensor) -> None:
    """Permute the block's hidden units so their fc1 pre-activations correlate best with target's."""
    correlation = _standardized(target).T @ _standardized(source)
    perm = torch.as_tensor(linear_sum_assignment(-correlation.numpy())[1])
    state[f"{block}.fc1.weight"] = state[f"{block}.fc1.weight"][perm]
    state[f"{block}.fc1.bias"] = state[f"{block}.fc1.bias"][perm]
    state[f"{block}.fc2.weight"] = state[f"{block}.fc2.weight"][:, perm]


def _align_heads(state: StateDict, block: str, source: StateDict, target: StateDict, index: int) -> None:
    """Assign source heads to target heads and rotate each (q and k by one R, v by S, o by S^T)."""
    q, k, v = (source[f"{index}.{n}"] for n in "qkv")
    tq, tk, tv = (target[f"{index}.{n}"] for n in "qkv")
    heads, head_dim = q.shape[1:]

    def fit(to: int, src: int) -> tuple[float, torch.Tensor, torch.Tensor]:
        qk, target_qk = torch.cat([q[:, src], k[:, src]]), torch.cat([tq[:, to], tk[:, to]])
        rotation_qk = nearest_orthogonal(qk.T @ target_qk).T
        rotation_v = nearest_orthogonal(v[:, src].T @ tv[:, to]).T
        residual_qk = (qk @ rotation_qk.T - target_qk).square().sum()
        residual_v = (v[:, src] @ rotation_v.T - tv[:, to]).square().sum()
        return float(residual_qk + residual_v), rotation_qk, rotation_v

    cost = torch.tensor([[fit(to, src)[0] for src in range(heads)] for to in range(heads)])
    assignment = linear_sum_assignment(cost.numpy())[1]
    old = {f"{n}.{p}": state[f"{block}.attn.{n}.{p}"] for n in "qkvo" for p in ("weight", "bias")}
    new = {name: tensor.clone() for name, tensor in old.items()}
    for to, src in enumerate(assignment.tolist()):
        _, rotation_qk, rotation_v = fit(to, src)
        rows_to = slice(to * head_dim, (to + 1) * head_dim)
        rows_src = slice(src * head_dim, (src + 1) * head_dim)
        for name, rotation in (("q", rotation_qk), ("k", rotation_qk), ("v", rotation_v)):
            new[f"{name}.weight"][rows_to] = rotation @ old[f"{name}.weight"][rows_src]
            new[f"{name}.bias"][rows_to] = rotation @ old[f"{name}.bias"][rows_src]
        new["o.weight"][:, rows_to] = old["o.weight"][:, rows_src] @ rotation_v.T
    for name, tensor in new.items():
        state[f"{block}.attn.{name}"] = tensor


def align_to_targets(
    module: nn.Module, state: Mapping[str, torch.Tensor], targets: StateDict, images: torch.Tensor
) -> StateDict:
    """A folded ViT state aligned onto target activations (`activations` of the same images)."""
    config: ViTConfig = module.config
    basis = mean_free_basis(config.dim)
    stream = activations(module, state, images)["stream"]
    inner = nearest_orthogonal((stream @ basis).T @ (targets["stream"] @ basis)).T
    ones = torch.full((config.dim, 1), config.dim**-0.5)
    out = rotate_stream(state, config, ones @ ones.T + basis @ inner @ basis.T)
    source = activations(module, out, images)
    for i in range(config.depth):
        _align_mlp(out, f"blocks.{i}", source[f"{i}.fc1"], targets[f"{i}.fc1"])
        _align_heads(out, f"blocks.{i}", source, targets, i)
    return out


def functional_align(
    architecture: Architecture,
    stacked: Mapping[str, torch.Tensor],
    images: torch.Tensor,
    reference: int,
    rounds: int = 3,
) -> dict[str, torch.Tensor]:
    """K stacked ViT members (K, ...) folded and aligned: round 1 onto member `reference`'s
    activations on `images`, each later round onto the mean of the previous round's."""
    if not isinstance(architecture.config, ViTConfig):
        raise ValueError(
            f"functional alignment supports the ViT family; {architecture.name} is {architecture.family}"
        )
    module = architecture.build()
    folded = [fold_layernorms(member, architecture.config) for member in unstack_state_dicts(stacked)]
    targets = activations(module, folded[reference], images)
    for done in range(1, rounds + 1):
        aligned = [align_to_targets(module, member, targets, images) for member in folded]
        if done < rounds:  # the next round's targets: the mean of these members' activations
            every = [activations(module, member, images) for member in aligned]
            targets = {name: torch.stack([a[name] for a in every]).mean(0) for name in every[0]}
    return stack_state_dicts(aligned)

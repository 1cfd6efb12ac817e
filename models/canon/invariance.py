"""The permutation-invariance test: a spec is only trusted once permuting by it leaves outputs unchanged."""

from collections.abc import Callable, Sequence

import torch
from torch import nn

from .permute import apply_permutation, random_permutation
from .spec import PermutationSpec


class PermutationInvarianceError(ValueError):
    """Raised when permuting a network by its spec changes what it computes."""


def perturbed_state(module: nn.Module, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """The module's state with every float entry perturbed, so that no tensor is invariant by accident
    (norm weights of 1, biases and running means of 0, running variances of 1)."""
    out = {}
    for key, tensor in module.state_dict().items():
        if not tensor.is_floating_point():
            out[key] = tensor.clone()
        elif key.endswith("running_var"):
            out[key] = torch.empty_like(tensor).uniform_(0.5, 2.0, generator=generator)
        else:
            out[key] = tensor + 0.1 * torch.randn(tensor.shape, generator=generator)
    return out


def check_permutation_invariance(
    build: Callable[[], nn.Module],
    spec: PermutationSpec,
    input_shape: Sequence[int],
    name: str,
    seed: int = 0,
    trials: int = 3,
    tolerance: float = 1e-4,
) -> None:
    """Raise PermutationInvarianceError unless random perms from `spec` keep outputs of `build()`.

    Each trial perturbs a fresh module's state, permutes it with a random element of
    the spec's symmetry group and compares both modules (eval mode) on 16 random
    inputs (16, *input_shape): the largest difference must stay within `tolerance`
    times the outputs' largest magnitude.
    """
    generator = torch.Generator().manual_seed(seed)
    original, permuted = build().eval(), build().eval()
    inputs = torch.randn(16, *input_shape, generator=generator)
    for _ in range(trials):
        state = perturbed_state(original, generator)
        original.load_state_dict(state)
        permuted.load_state_dict(apply_permutation(spec, random_permutation(spec, state, generator), state))
        with torch.no_grad():
            expected, got = original(inputs), permuted(inputs)
        error = float((expected - got).abs().max())
        if error > tolerance * max(float(expected.abs().max()), 1.0):
            raise PermutationInvarianceError(
                f"architecture {name!r}: permuting hidden units by the derived spec changed the outputs "
                f"(max difference {error:.3g}); the spec is wrong for this module, usually because an "
                "operation mixes hidden units in a way the tracer took as elementwise. Report the "
                "module, or give the architecture a hand-written spec"
            )

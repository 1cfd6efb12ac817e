"""Weight matching lowers the loss barrier between trained networks (real Fashion-MNIST).

The barrier of networks A and B along the linear path theta(t) = (1 - t) A + t B is

    max_t  L(theta(t)) - ((1 - t) L(A) + t L(B)),

with L the mean test cross-entropy. Run with `pytest -s` to see the numbers.
"""

import pytest
import torch
from torch import nn

from models.architectures import Architecture, get_architecture
from models.canon import MatchingResult, apply_permutation, random_permutation, run_weight_matching, spec_for
from models.weightspace import interpolation_path, loss_barrier
from models.zoo.datasets import Dataset, Split, load_dataset

pytestmark = pytest.mark.slow

StateDict = dict[str, torch.Tensor]
VIT_EPOCHS, VIT_EXAMPLES = 2, 20_000  # ~80% test accuracy in seconds


@pytest.fixture(scope="module")
def fashion() -> Dataset:
    return load_dataset("fashion-mnist")


def train(
    arch: Architecture, init_seed: int, data_seed: int, split: Split, epochs: int, examples: int
) -> StateDict:
    """Adam (lr 1e-3, batch 128), `epochs` passes over `examples` training examples drawn by `data_seed`."""
    torch.manual_seed(init_seed)
    model = arch.build().train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(data_seed)
    subset = torch.randperm(len(split), generator=generator)[:examples]
    for _ in range(epochs):
        order = subset[torch.randperm(len(subset), generator=generator)]
        for start in range(0, len(order), 128):
            batch = order[start : start + 128]
            loss = nn.functional.cross_entropy(model(split.images[batch]), split.labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def barriers_before_and_after_matching(
    arch: Architecture, a: StateDict, b: StateDict, test: Split, points: int, label: str
) -> tuple[float, float, MatchingResult]:
    """Barrier between A and B, and between A and B weight-matched onto A. Checks that
    both endpoints are trained and that matching left B's function unchanged."""
    spec = spec_for(arch)
    result = run_weight_matching(spec, a, b, seed=0)
    aligned = apply_permutation(spec, result.permutations, b)
    module, images, labels = arch.build(), test.images, test.labels
    losses_before, accuracy_before = interpolation_path(module, a, b, images, labels, points)
    losses_after, accuracy_after = interpolation_path(module, a, aligned, images, labels, points)
    assert accuracy_before[0] > 0.75 and accuracy_before[-1] > 0.75, "endpoints are not trained networks"
    assert abs(float(losses_after[-1] - losses_before[-1])) < 1e-4, "matching changed B's function"
    before, after = loss_barrier(losses_before), loss_barrier(losses_after)
    mid = points // 2
    print(
        f"\n{arch.name} ({label}): test-loss barrier {before:.4f} before matching, {after:.4f} after; "
        f"midpoint accuracy {float(accuracy_before[mid]):.3f} -> {float(accuracy_after[mid]):.3f} "
        f"(endpoints {float(accuracy_before[0]):.3f}, {float(accuracy_before[-1]):.3f}); "
        f"{result.sweeps} sweeps"
    )
    return before, after, result


def test_weight_matching_halves_the_mlp_barrier(fashion):
    arch = get_architecture("mlp-fashion")
    a = train(arch, 0, 0, fashion.train, epochs=3, examples=len(fashion.train))
    b = train(arch, 1, 1, fashion.train, epochs=3, examples=len(fashion.train))
    before, after, _ = barriers_before_and_after_matching(arch, a, b, fashion.test, 21, "independent seeds")
    assert after <= 0.5 * before


@pytest.fixture(scope="module")
def vit_a(fashion) -> StateDict:
    return train(get_architecture("vit-fashion"), 0, 0, fashion.train, VIT_EPOCHS, VIT_EXAMPLES)


def test_transfusion_realigns_a_permuted_vit_sibling(fashion, vit_a):
    """B shares A's initialization but saw other data in another order, then is scrambled by a
    random symmetry: TransFusion must find the alignment back through the training noise."""
    arch = get_architecture("vit-fashion")
    sibling = train(arch, 0, 1, fashion.train, VIT_EPOCHS, VIT_EXAMPLES)
    spec = spec_for(arch)
    scrambled = apply_permutation(
        spec, random_permutation(spec, sibling, torch.Generator().manual_seed(0)), sibling
    )
    before, after, _ = barriers_before_and_after_matching(
        arch, vit_a, scrambled, fashion.test, 11, "same init, permuted"
    )
    assert after < 0.5 * before


def test_transfusion_on_independently_initialized_vits(fashion, vit_a):
    """Reported, not bounded: for independently initialized ViTs this small and this briefly
    trained, the barrier after matching is within noise of the one before (the residual stream's
    symmetry is close to a full rotation, which permutations cannot undo). The checks are that
    matching trained ViTs is a symmetry and that it raises the weights' alignment."""
    arch = get_architecture("vit-fashion")
    b = train(arch, 1, 1, fashion.train, VIT_EPOCHS, VIT_EXAMPLES)
    _, _, result = barriers_before_and_after_matching(arch, vit_a, b, fashion.test, 11, "independent seeds")
    assert result.objective > result.initial_objective

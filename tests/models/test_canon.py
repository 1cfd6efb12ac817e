"""Permutation specs, weight matching, TransFusion and canonicalization on random networks."""

import pytest
import torch
from torch import nn

from models.architectures import ARCHITECTURES, Architecture
from models.architectures.mlp import MLP, MLPConfig
from models.canon import (
    apply_member_permutations,
    apply_permutation,
    canonicalize,
    identity_permutation,
    match_stacked,
    mlp_spec,
    perm_sizes,
    random_permutation,
    run_weight_matching,
    spec_for,
    weight_matching,
)
from models.canon.permute import head_assignment
from models.canon.spec import PermutationSpec
from models.canon.transfusion import head_descriptors, match_heads

SMALL = [name for name in ARCHITECTURES if name != "resnet18-cifar"]


def random_state_dict(arch: Architecture, seed: int) -> dict[str, torch.Tensor]:
    """A freshly initialized network with every float entry perturbed, so no tensor is
    permutation-invariant by accident (LayerNorm/BatchNorm weights of 1, running stats of 0/1)."""
    torch.manual_seed(seed)
    state = arch.build().state_dict()
    generator = torch.Generator().manual_seed(seed)
    out = {}
    for key, tensor in state.items():
        if not tensor.is_floating_point():
            out[key] = tensor
        elif key.endswith("running_var"):
            out[key] = torch.empty_like(tensor).uniform_(0.5, 2.0, generator=generator)
        else:
            scale = float(tensor.std()) if tensor.numel() > 1 and float(tensor.std()) > 0 else 0.1
            out[key] = tensor + 0.5 * scale * torch.randn(tensor.shape, generator=generator)
    return out


def load(arch: Architecture, state: dict[str, torch.Tensor]) -> nn.Module:
    module = arch.build()
    module.load_state_dict(state)
    return module


def max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].double() - b[k].double()).abs().max()) if a[k].numel() else 0.0 for k in a)


@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_spec_covers_every_state_dict_entry(name):
    arch = ARCHITECTURES[name]
    spec = spec_for(arch)
    torch.manual_seed(0)
    state = arch.build().state_dict()
    assert spec.axes.keys() == state.keys()
    for key, axes in spec.axes.items():
        assert len(axes) == state[key].dim(), key
    sizes: dict[str, set[int]] = {}
    for key, axes in spec.axes.items():
        for axis, perm in enumerate(axes):
            if perm is not None:
                sizes.setdefault(perm, set()).add(state[key].shape[axis])
    assert all(len(s) == 1 for s in sizes.values()), sizes
    assert perm_sizes(spec, state) == {perm: s.pop() for perm, s in sizes.items()}
    assert len(spec.head_groups) == (arch.config.depth if arch.family == "vit" else 0)


def test_perm_sizes_rejects_a_spec_that_does_not_fit():
    arch = ARCHITECTURES["mlp-digits"]
    state = arch.build().state_dict()
    axes = spec_for(arch).axes
    with pytest.raises(ValueError, match="uncovered keys"):
        perm_sizes(PermutationSpec({k: v for k, v in axes.items() if k != "layers.0.bias"}), state)
    with pytest.raises(ValueError, match="spec names 3 axes"):
        perm_sizes(PermutationSpec(axes | {"layers.1.weight": ("P_1", "P_0", None)}), state)
    with pytest.raises(ValueError, match="has size"):  # the 10 logits cannot share the 32-wide P_0
        perm_sizes(PermutationSpec(axes | {"layers.2.bias": ("P_0",)}), state)


def test_matching_rejects_networks_of_different_widths():
    narrow, wide = MLPConfig(in_features=64, hidden=(32, 32)), MLPConfig(in_features=64, hidden=(32, 48))
    torch.manual_seed(0)
    template, source = MLP(narrow).state_dict(), MLP(wide).state_dict()
    with pytest.raises(ValueError, match="different widths"):
        weight_matching(mlp_spec(narrow), template, source)


@pytest.mark.parametrize("name", SMALL)
def test_random_permutation_preserves_function(name):
    arch = ARCHITECTURES[name]
    spec = spec_for(arch)
    state = random_state_dict(arch, seed=0)
    perms = random_permutation(spec, state, torch.Generator().manual_seed(1))
    assert any(not torch.equal(p, torch.arange(len(p))) for p in perms.values())
    original, permuted = load(arch, state), load(arch, apply_permutation(spec, perms, state))
    x = torch.randn(16, *arch.input_shape, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        for module in (original, permuted):
            module.eval()
        assert (original(x) - permuted(x)).abs().max() <= 1e-5
        for module in (original, permuted):
            module.train()  # BatchNorm: batch statistics, running statistics updated
        assert (original(x) - permuted(x)).abs().max() <= 1e-5
    # The updated running statistics are the permuted ones too.
    assert (
        max_difference(apply_permutation(spec, perms, original.state_dict()), permuted.state_dict()) <= 1e-6
    )


def test_random_permutation_is_head_structured():
    arch = ARCHITECTURES["vit-fashion"]
    spec = spec_for(arch)
    state = random_state_dict(arch, seed=0)
    perms = random_permutation(spec, state, torch.Generator().manual_seed(3))
    for group in spec.head_groups:
        heads = head_assignment(perms[group.qk], group.num_heads)
        assert torch.equal(heads, head_assignment(perms[group.vo], group.num_heads))
        for name in (group.qk, group.vo):
            head_dim = len(perms[name]) // group.num_heads
            blocks = perms[name].view(group.num_heads, head_dim) // head_dim  # source head of every unit
            assert torch.equal(blocks, heads[:, None].expand(-1, head_dim))
            assert torch.equal(perms[name].sort().values, torch.arange(len(perms[name])))


@pytest.mark.parametrize("name", SMALL)
def test_weight_matching_undoes_a_random_permutation(name):
    arch = ARCHITECTURES[name]
    spec = spec_for(arch)
    state = random_state_dict(arch, seed=0)
    scrambled = apply_permutation(
        spec, random_permutation(spec, state, torch.Generator().manual_seed(4)), state
    )
    assert max_difference(scrambled, state) > 1e-2
    perms = weight_matching(spec, state, scrambled, seed=0)
    assert max_difference(apply_permutation(spec, perms, scrambled), state) < 1e-6


@pytest.mark.parametrize("name", ["mlp-digits", "resnet20-fashion", "vit-fashion"])
def test_weight_matching_of_different_networks_is_a_symmetry_that_raises_alignment(name):
    arch = ARCHITECTURES[name]
    spec = spec_for(arch)
    template, source = random_state_dict(arch, seed=0), random_state_dict(arch, seed=1)
    result = run_weight_matching(spec, template, source, seed=0)
    assert result.converged
    assert result.objective > result.initial_objective
    aligned = apply_permutation(spec, result.permutations, source)
    x = torch.randn(8, *arch.input_shape, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        a, b = load(arch, source).eval(), load(arch, aligned).eval()
        assert (a(x) - b(x)).abs().max() <= 1e-5
    for group in spec.head_groups:
        heads = head_assignment(result.permutations[group.qk], group.num_heads)
        assert torch.equal(heads, head_assignment(result.permutations[group.vo], group.num_heads))


def test_weight_matching_is_deterministic_for_a_seed():
    arch = ARCHITECTURES["cnn-fashion"]
    spec = spec_for(arch)
    template, source = random_state_dict(arch, seed=0), random_state_dict(arch, seed=1)
    first = weight_matching(spec, template, source, seed=7)
    second = weight_matching(spec, template, source, seed=7)
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_spectral_head_matching_recovers_the_head_permutation():
    arch = ARCHITECTURES["vit-fashion"]
    spec = spec_for(arch)
    state = random_state_dict(arch, seed=0)
    perms = random_permutation(spec, state, torch.Generator().manual_seed(6))
    scrambled = apply_permutation(spec, perms, state)
    for group in spec.head_groups:
        found = match_heads(head_descriptors(spec, group, state), head_descriptors(spec, group, scrambled))
        # Scrambled head h is original head heads[h], so original head a sits at scrambled argsort(heads)[a].
        assert torch.equal(found, torch.argsort(head_assignment(perms[group.qk], group.num_heads)))


def test_stacked_application_equals_per_member_application():
    arch = ARCHITECTURES["resnet20-fashion"]
    spec = spec_for(arch)
    members = [random_state_dict(arch, seed=s) for s in range(3)]
    stacked = {k: torch.stack([m[k] for m in members]) for k in members[0]}
    perms = random_permutation(spec, members[0], torch.Generator().manual_seed(8))
    permuted = apply_permutation(spec, perms, stacked, stacked=True)
    for i, member in enumerate(members):
        assert (
            max_difference({k: v[i] for k, v in permuted.items()}, apply_permutation(spec, perms, member))
            == 0
        )


@pytest.mark.parametrize("name", ["resnet20-fashion", "vit-fashion"])
def test_member_permutations_equal_per_member_application(name):
    arch = ARCHITECTURES[name]
    spec = spec_for(arch)
    members = [random_state_dict(arch, seed=s) for s in range(3)]
    stacked = {k: torch.stack([m[k] for m in members]) for k in members[0]}
    generator = torch.Generator().manual_seed(11)
    perms = [random_permutation(spec, members[0], generator) for _ in members]
    permuted = apply_member_permutations(spec, perms, stacked)
    for i, member in enumerate(members):
        expected = apply_permutation(spec, perms[i], member)
        assert max_difference({k: v[i] for k, v in permuted.items()}, expected) == 0


@pytest.mark.parametrize("name", ["cnn-fashion", "vit-fashion"])
def test_canonicalize_recovers_the_template_from_permuted_copies(name):
    arch = ARCHITECTURES[name]
    spec = spec_for(arch)
    template = random_state_dict(arch, seed=0)
    generator = torch.Generator().manual_seed(9)
    all_perms = [random_permutation(spec, template, generator) for _ in range(3)]
    copies = [apply_permutation(spec, p, template) for p in all_perms]
    members = {k: torch.stack([c[k] for c in copies]) for k in template}
    calls = []
    result = canonicalize(spec, members, template, progress=lambda done, total: calls.append((done, total)))
    assert calls[-1] == (3, 3) and [done for done, _ in calls] == sorted(done for done, _ in calls)
    assert len(result.permutations) == 3
    for k, tensor in template.items():
        assert torch.equal(result.aligned[k], tensor.expand_as(members[k])), k
    assert identity_permutation(spec, template).keys() == result.permutations[0].keys()


@pytest.mark.parametrize("name", ["mlp-digits", "cnn-fashion", "vit-fashion"])
def test_matching_a_stack_equals_matching_each_member_alone(name):
    """Different networks and permuted copies of the template, matched at once: each member gets the
    perms, sweeps and objective of matching it alone, and the copies come back exactly."""
    arch = ARCHITECTURES[name]
    spec = spec_for(arch)
    template = random_state_dict(arch, seed=0)
    generator = torch.Generator().manual_seed(10)
    copies = [
        apply_permutation(spec, random_permutation(spec, template, generator), template) for _ in range(2)
    ]
    members = [random_state_dict(arch, seed=s) for s in (1, 2, 3)] + copies
    stacked = {k: torch.stack([m[k] for m in members]) for k in template}
    results = match_stacked(spec, template, stacked, seed=0)
    assert len({r.sweeps for r in results}) > 1  # members finish at different sweeps
    for member, result in zip(members, results, strict=True):
        alone = run_weight_matching(spec, template, member, seed=0)
        assert all(torch.equal(result.permutations[p], alone.permutations[p]) for p in alone.permutations)
        assert (result.sweeps, result.converged) == (alone.sweeps, alone.converged)
        assert result.objective == pytest.approx(alone.objective, rel=1e-6)
    for copy, result in zip(copies, results[-2:], strict=True):
        assert max_difference(apply_permutation(spec, result.permutations, copy), template) == 0

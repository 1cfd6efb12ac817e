"""Issue 15's levers: activation matching, trajectory checkpoints, the shaped / tempered samplers
(on scikit-learn's digits and the mlp-digits architecture)."""

import pytest
import torch

from models.architectures import get_architecture
from models.canon import spec_for
from models.canon.activation_matching import activation_align, hidden_activations
from models.canon.permute import apply_permutation, random_permutation
from models.flow import EncoderConfig, VelocityConfig, VelocityMLP, WeightEncoder, noise_rows
from models.generator.sampling import CandidateSampler
from models.levers.samplers import ShapedResidualSampler, TemperatureSampler, loo_residual_sigma
from models.levers.trajectory import align_trajectories, train_with_checkpoints
from models.weightspace import WeightLayout, predictions
from models.zoo.datasets import load_dataset
from models.zoo.train import Recipe, train_members

MLP = get_architecture("mlp-digits")
RECIPE = Recipe(epochs=2, batch_size=32, lr=3e-3)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def trained(digits):
    """Three digits MLPs, two epochs each (78 steps)."""
    return train_members(MLP, digits, [0, 1, 2], RECIPE)


def member(stacked, k):
    return {key: value[k] for key, value in stacked.items()}


def test_activation_matching_recovers_a_known_permutation_exactly(digits, trained):
    spec = spec_for(MLP)
    net = member(trained, 0)
    perms = random_permutation(spec, net, torch.Generator().manual_seed(3))
    permuted = apply_permutation(spec, perms, net)
    assert not torch.equal(permuted["layers.0.weight"], net["layers.0.weight"])
    pair = {key: torch.stack([net[key], permuted[key]]) for key in net}
    result = activation_align(MLP, pair, digits.train.images, template_member=0)
    for key in net:
        assert torch.equal(result.aligned[key][1], net[key]), key
        assert torch.equal(result.aligned[key][0], net[key]), key  # the template member stays put
    # the recovered permutation undoes the known one
    for name, perm in perms.items():
        assert torch.equal(perm[result.permutations[1][name]], torch.arange(len(perm)))


def test_activation_alignment_keeps_functions_and_raises_unit_correlation(digits, trained):
    result = activation_align(MLP, trained, digits.train.images)
    module = MLP.build()
    assert torch.equal(
        predictions(module, result.aligned, digits.test.images),
        predictions(module, trained, digits.test.images),
    )

    def matched_correlation(stacked):
        (_, post), _ = hidden_activations(MLP, stacked, digits.train.images)  # first hidden layer
        z = post - post.mean(1, keepdim=True)
        z = z / z.norm(dim=1, keepdim=True).clamp_min(1e-8)
        return (z[1:] * z[:1]).sum(1).mean().item()  # unit i of members 1, 2 vs unit i of member 0

    before, after = matched_correlation(trained), matched_correlation(result.aligned)
    assert after > before + 0.2, (before, after)


def test_trajectory_checkpoints_are_the_runs_states_and_align_with_their_run(digits, trained):
    checkpoints = train_with_checkpoints(MLP, digits, [0, 1, 2], RECIPE, keep_epochs=(1, 2))
    assert list(checkpoints) == [1, 2]
    for key, value in trained.items():  # the last kept epoch is the trained zoo itself
        assert torch.equal(checkpoints[2][key], value), key
    assert not torch.equal(checkpoints[1]["layers.0.weight"], checkpoints[2]["layers.0.weight"])
    spec = spec_for(MLP)
    perms = [random_permutation(spec, member(trained, k), torch.Generator().manual_seed(k)) for k in range(3)]
    aligned = align_trajectories(MLP, checkpoints, perms)
    assert aligned["layers.0.weight"].shape[0] == 6  # epoch-major: row e * K + k
    for e, epoch in enumerate((1, 2)):
        for k in range(3):
            expected = apply_permutation(spec, perms[k], member(checkpoints[epoch], k))
            for key, value in expected.items():
                assert torch.equal(aligned[key][e * 3 + k], value), key
    module = MLP.build()
    assert torch.equal(
        predictions(module, aligned, digits.val.images)[3:],
        predictions(module, checkpoints[2], digits.val.images),
    )


def test_loo_residual_sigma_is_zero_inside_a_span_and_positive_outside():
    g = torch.Generator().manual_seed(0)
    basis, offset = torch.randn(3, 10, generator=g), torch.randn(10, generator=g)
    inside = torch.randn(8, 3, generator=g) @ basis + offset  # 8 points of one 3-dim affine plane
    assert loo_residual_sigma(inside).max() < 1e-5
    generic = torch.randn(8, 10, generator=g)
    sigma = loo_residual_sigma(generic)
    assert sigma.shape == (10,) and sigma.min() > 0.05


def test_shaped_and_tempered_samplers_keep_the_stream_and_change_one_thing(trained):
    weights = WeightLayout.from_module(MLP.build()).flatten_stacked(trained)
    encoder = WeightEncoder.fit(weights, WeightLayout.from_module(MLP.build()), EncoderConfig(n_components=2))
    flow = VelocityMLP(VelocityConfig(dim=2, hidden=16)).eval()  # untrained: velocity 0, codes = start noise
    shipped = CandidateSampler(flow, encoder, 0.01)
    constant = ShapedResidualSampler(flow, encoder, torch.full((encoder.dim,), 0.01))
    torch.testing.assert_close(
        constant.sample(5, 7, "rk4", 2), shipped.sample(5, 7, "rk4", 2), rtol=0, atol=1e-7
    )
    tempered = TemperatureSampler(flow, encoder, 0.0, temperature=0.5)
    expected = encoder.decode(0.5 * noise_rows(5, 2, 7))
    torch.testing.assert_close(tempered.sample(5, 7, "rk4", 2), expected)
    stream = tempered.stream(7, "rk4", 2)
    torch.testing.assert_close(stream(3, 2), expected[3:5])
    at_one = TemperatureSampler(flow, encoder, 0.01, temperature=1.0)
    torch.testing.assert_close(at_one.sample(5, 7, "rk4", 2), shipped.sample(5, 7, "rk4", 2))

"""The scale run's synthetic zoo (bench/synthetic_zoo.py) is what its recipe says: members are exact
permutations of a few random-init bases plus small noise, which canonicalization undoes."""

import torch

from bench.synthetic_zoo import SyntheticZoo, SyntheticZooRecipe
from models.architectures import Architecture
from models.architectures.resnet import ResNetConfig
from models.canon import canonicalize
from models.weightspace import WeightLayout, stack_state_dicts

TINY = Architecture("tiny-resnet", "resnet", ResNetConfig(1, (1, 1), 4), "none", (1, 8, 8))
RECIPE = SyntheticZooRecipe(bases=2, noise=1e-3, seed=3)


def distance(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], layout: WeightLayout) -> float:
    """Relative L2 distance of the flattened parameters of two state dicts."""
    x, y = layout.flatten(a), layout.flatten(b)
    return ((x - y).norm() / y.norm()).item()


def test_members_are_permuted_noisy_bases_and_canonicalization_recovers_them() -> None:
    zoo = SyntheticZoo(TINY, RECIPE)
    layout = WeightLayout.from_module(TINY.build())
    members = [zoo.member(k) for k in range(4)]
    for b, base in enumerate(zoo.bases):
        mine = [members[k] for k in range(b, 4, RECIPE.bases)]
        assert all(distance(state, base, layout) > 0.5 for state, _ in mine)  # permuted: far from the base
        result = canonicalize(zoo.spec, stack_state_dicts([state for state, _ in mine]), base)
        for k, (_, perms) in enumerate(mine):
            aligned = {key: value[k] for key, value in result.aligned.items()}
            assert 0 < distance(aligned, base, layout) < 3 * RECIPE.noise  # the base, up to the noise
            for name, perm in perms.items():  # the inverse of the drawn permutation
                assert torch.equal(result.permutations[k][name], torch.argsort(perm)), name


def test_a_member_computes_its_base_function_up_to_the_noise() -> None:
    zoo = SyntheticZoo(TINY, RECIPE)
    state, _ = zoo.member(1)
    member, base = TINY.build().eval(), TINY.build().eval()
    member.load_state_dict(state)
    base.load_state_dict(zoo.bases[1])
    x = torch.randn(5, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = base(x)
        assert ((member(x) - expected).norm() / expected.norm()).item() < 10 * RECIPE.noise
    again, _ = SyntheticZoo(TINY, RECIPE).member(1)
    assert all(torch.equal(again[key], value) for key, value in state.items())  # deterministic in k

"""Permutation specs derived by tracing (models.canon.trace): equal to the hand-written ones, invariant,
and clear about what they cannot trace."""

import pytest
import torch
from torch import nn

from models.architectures import ARCHITECTURES
from models.architectures.mlp import MLP, MLPConfig
from models.canon import mlp_spec, spec_for
from models.canon.invariance import PermutationInvarianceError, check_permutation_invariance
from models.canon.spec import SPEC_BUILDERS, PermutationSpec
from models.canon.trace import TraceError, trace_spec
from tests.plugins.tiny_arch import tiny_mlp, tiny_resnet

TRACEABLE = [name for name, arch in ARCHITECTURES.items() if arch.family != "vit"]


def canonical_form(spec: PermutationSpec) -> tuple[frozenset, frozenset]:
    """The spec up to perm names: its keys with their ranks, and each perm's set of (key, axis)."""
    keys = frozenset((key, len(axes)) for key, axes in spec.axes.items())
    groups = frozenset(frozenset(carriers) for carriers in spec.perm_to_axes.values())
    return keys, groups


def test_every_family_but_attention_is_traced() -> None:
    assert {ARCHITECTURES[name].family for name in TRACEABLE} == set(SPEC_BUILDERS) - {"vit"}
    assert {"mlp-digits", "mlp-fashion", "cnn-fashion", "resnet20-fashion", "resnet18-cifar"} <= set(
        TRACEABLE
    )


@pytest.mark.parametrize("name", TRACEABLE)
def test_traced_spec_equals_the_hand_written_one(name: str) -> None:
    arch = ARCHITECTURES[name]
    traced = trace_spec(arch.build(), arch.input_shape)
    written = SPEC_BUILDERS[arch.family](arch.config)
    assert canonical_form(traced) == canonical_form(written)
    assert len(traced.perm_names) == len(written.perm_names) > 0


def test_attention_is_refused_with_the_operation_named() -> None:
    arch = ARCHITECTURES["vit-fashion"]
    with pytest.raises(TraceError, match="reshape"):
        trace_spec(arch.build(), arch.input_shape)


@pytest.mark.parametrize("factory", [tiny_resnet, tiny_mlp])
def test_a_plugin_spec_ties_residual_streams_and_norms_and_passes_the_invariance_test(factory) -> None:
    arch = factory()
    spec = spec_for(arch)  # traced, then checked for invariance
    stream = "entry" if factory is tiny_resnet else "embed"
    carriers = {key for key, _ in spec.perm_to_axes[stream]}
    residual_end = {"project.weight", "project_norm.weight"} if factory is tiny_resnet else {"down.weight"}
    norm = {"entry_norm.running_var"} if factory is tiny_resnet else {"norm.weight", "norm.bias"}
    assert residual_end | norm <= carriers
    assert spec.axes["classify.weight"][0] is None and spec.axes["classify.bias"] == (None,)
    first = "entry.weight" if factory is tiny_resnet else "embed.weight"
    assert spec.axes[first][1] is None, "the input axis stays unpermuted"
    check_permutation_invariance(arch.build, spec, arch.input_shape, arch.name, seed=3)


def test_a_residual_added_to_the_input_leaves_that_stream_unpermuted() -> None:
    class AddsInput(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner, self.outer = nn.Linear(4, 8), nn.Linear(8, 4)
            self.head = nn.Linear(4, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(torch.relu(self.outer(torch.relu(self.inner(x))) + x))

    spec = trace_spec(AddsInput(), (4,))
    assert spec.axes["outer.weight"] == (None, "inner") and spec.axes["head.weight"] == (None, None)
    check_permutation_invariance(AddsInput, spec, (4,), "adds-input")


def test_flatten_of_a_pooled_feature_map_keeps_the_channel_perm() -> None:
    net = nn.Sequential(nn.Conv2d(1, 6, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 3))
    spec = trace_spec(net, (1, 7, 7))
    assert spec.axes["4.weight"] == (None, "0") and spec.axes["0.weight"] == ("0", None, None, None)


class Branchy(nn.Module):
    """Data-dependent control flow inside a submodule."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x) if x.sum() > 0 else x


class Sorts(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(4, 8), nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(torch.cumsum(self.a(x), dim=-1))


class Wrapper(nn.Module):
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.block = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


@pytest.mark.parametrize(
    ("module", "shape", "expected"),
    [
        (Wrapper(Branchy()), (4,), r"cannot trace module 'block' \(Branchy\).*control flow"),
        (Wrapper(Sorts()), (4,), r"torch.cumsum is not supported, in module 'block' \(Sorts\)"),
        (nn.Sequential(nn.Conv2d(1, 4, 3), nn.GroupNorm(2, 4)), (1, 5, 5), r"GroupNorm '1' is not supported"),
        (
            nn.Sequential(nn.Conv2d(1, 4, 3, groups=1), nn.Flatten(), nn.Linear(36, 2)),
            (1, 5, 5),
            r"over 9 pos",
        ),
        (nn.Sequential(nn.Conv1d(6, 6, 1, groups=2)), (6, 5), r"Conv1d '0' is not supported with groups=2"),
    ],
)
def test_what_cannot_be_traced_is_named(module: nn.Module, shape: tuple[int, ...], expected: str) -> None:
    with pytest.raises(TraceError, match=expected):
        trace_spec(module, shape)


def test_a_layer_added_to_its_own_input_is_refused_for_weight_matching() -> None:
    class SelfResidual(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.mix, self.b = nn.Linear(4, 8), nn.Linear(8, 8), nn.Linear(8, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.a(x)
            return self.b(h + self.mix(h))

    with pytest.raises(TraceError, match="mix.weight carries the same unit permutation on two axes"):
        trace_spec(SelfResidual(), (4,))


def test_a_wrong_spec_fails_the_invariance_test() -> None:
    config = MLPConfig(in_features=6, hidden=(5, 7), num_classes=3)
    # forgets that layer 1 reads the units of P_0
    wrong = PermutationSpec(mlp_spec(config).axes | {"layers.1.weight": ("P_1", None)})
    with pytest.raises(PermutationInvarianceError, match="changed the outputs"):
        check_permutation_invariance(lambda: MLP(config), wrong, (6,), "broken-mlp")

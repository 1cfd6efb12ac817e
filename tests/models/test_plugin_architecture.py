"""Bring your own architecture: a plugin's factory is found (entry point, DWF_ARCHITECTURES, a
`module:factory` name, `dwf --architecture-plugin`), checked, and goes through zoo, canonicalization,
generator build and generation with its traced spec."""

from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from deepweightflow.cli import app
from models.architectures import ArchitecturePluginError, UnknownArchitectureError, get_architecture, lookup
from models.canon.trace import TraceError
from models.flow import FlowTrainConfig
from models.generator import Generator, read_card
from models.generator.build import build_from_zoo
from models.generator.recipe import DataRecipe, FlowRecipe, GeneratorRecipe
from models.weightspace import batched_evaluate
from models.zoo.build import train_zoo
from models.zoo.canonical import canonicalize_zoo
from models.zoo.datasets import load_dataset
from models.zoo.train import Recipe
from tests.plugins.tiny_arch import TinyResidualMLP, tiny_mlp

TINY = "tests.plugins.tiny_arch:tiny_mlp"


@pytest.fixture(autouse=True)
def fresh_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """As in a new process: no plugin loaded yet, none listed in DWF_ARCHITECTURES."""
    monkeypatch.setattr(lookup, "_loaded", {})
    monkeypatch.delenv(lookup.PLUGINS_VARIABLE, raising=False)


def test_a_module_factory_name_loads_the_plugin_and_remembers_its_own_name() -> None:
    with pytest.raises(UnknownArchitectureError, match="DWF_ARCHITECTURES"):
        get_architecture("tiny-mlp-digits")
    arch = get_architecture(TINY)
    assert arch.name == "tiny-mlp-digits" and arch.builder is TinyResidualMLP
    assert get_architecture("tiny-mlp-digits") is arch
    assert arch.to_dict()["config"] == {"in_features": 64, "width": 32, "expansion": 48, "num_classes": 10}


def test_the_environment_variable_finds_a_plugin_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(lookup.PLUGINS_VARIABLE, f"tests.plugins.tiny_arch:tiny_resnet, {TINY}")
    assert get_architecture("tiny-mlp-digits") == tiny_mlp()


def test_an_installed_entry_point_provides_the_architecture(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A distribution's metadata as pip writes it: [project.entry-points."deepweightflow.architectures"]."""
    info = tmp_path / "tiny_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: tiny-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[{lookup.ENTRY_POINT_GROUP}]\ntiny-mlp-digits = {TINY}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert get_architecture("tiny-mlp-digits") == tiny_mlp()


@pytest.mark.parametrize(
    ("factory", "expected"),
    [
        ("not_an_architecture", "returned Linear; an architecture factory returns"),
        ("without_builder", "`builder` is None: set it to the module class"),
        ("shadowing_a_registered_name", "'mlp-digits' is a registered architecture's: choose another"),
        ("mutable_config", r"frozen dataclass instance \(@dataclass\(frozen=True\)\)"),
        ("missing", "cannot load the architecture factory .* add its folder to PYTHONPATH"),
    ],
)
def test_a_bad_factory_is_refused_with_the_fix(factory: str, expected: str) -> None:
    with pytest.raises(ArchitecturePluginError, match=expected):
        get_architecture(f"tests.plugins.broken_arch:{factory}")


def test_the_cli_option_lists_the_plugin_for_the_command(monkeypatch: pytest.MonkeyPatch) -> None:
    command = ["--architecture-plugin", TINY, "zoo", "train", "tiny-mlp-digits", "--out", "unused"]
    result = CliRunner().invoke(app, [*command, "--members", "0"])
    assert result.exit_code == 1
    assert "members and chunk_size must be positive" in result.output, "found, so it got as far as training"


def test_an_untraceable_plugin_is_refused_before_any_member_is_trained(tmp_path: Path) -> None:
    with pytest.raises(TraceError, match="spreading a unit permutation over 36 positions"):
        train_zoo("tests.plugins.broken_arch:untraceable", 2, Recipe(epochs=1), tmp_path / "zoo")
    assert not (tmp_path / "zoo").exists()


def test_a_plugin_architecture_becomes_a_generator_of_accurate_networks(tmp_path: Path) -> None:
    zoo = tmp_path / "zoo"
    recipe = Recipe(epochs=12, batch_size=32, lr=3e-3, train_subset=400)
    manifest = train_zoo(TINY, 6, recipe, zoo, chunk_size=6)
    assert manifest.architecture["family"] == "tiny-mlp" and manifest.complete
    summary = canonicalize_zoo(zoo, ("medoid",))["templates"]["medoid"]
    assert summary["max_val_acc_change"] == 0.0, "permuting by the traced spec keeps every member's function"
    assert summary["mean_pairwise_distance_after"] < summary["mean_pairwise_distance_before"]
    generator_recipe = GeneratorRecipe(
        flow=FlowRecipe(hidden=64, train=FlowTrainConfig(iterations=200, batch_size=8)),
        data=DataRecipe(calibration_size=64, validation_size=180),
    )
    directory = build_from_zoo(zoo, tmp_path / "generators" / "tiny-mlp-digits", generator_recipe)
    assert read_card(directory).architecture.name == "tiny-mlp-digits"
    generator = Generator.load(directory, device="cpu")
    ensemble = generator.generate(8, seed=1)
    assert set(ensemble.state) == set(TinyResidualMLP(tiny_mlp().config).state_dict())
    test = load_dataset("digits").test
    accuracy = batched_evaluate(generator.decoder.module, ensemble.state, test.images, test.labels)[1]
    assert accuracy.mean() > 0.6, f"chance is 0.1, the zoo ~0.95; got {accuracy.mean():.3f}"
    assert torch.isfinite(torch.cat([t.flatten() for t in ensemble.state.values()])).all()

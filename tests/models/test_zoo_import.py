"""`dwf zoo import`: networks trained by a plain torch script (keys fc1..fc3, raw inputs x / 16, no
standardization) become a zoo whose members compute exactly what the source modules compute, and
then a generator whose networks take the same raw inputs."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn
from typer.testing import CliRunner

from contract.inputs import Standardize
from deepweightflow.cli import app
from deepweightflow.ensemble import load_stacked
from deepweightflow.preprocessing import Preprocess
from models.generator import read_card
from models.zoo.checkpoints import CheckpointError
from models.zoo.datasets import load_dataset, raw_inputs
from models.zoo.importing import import_zoo
from models.zoo.key_map import KeyMapError, map_keys
from models.zoo.store import load_zoo

MEMBERS = 6
runner = CliRunner()


class ForeignMLP(nn.Module):
    """Another code base's 64-32-32-10 MLP: its own key names, raw inputs divided by 16."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(64, 32), nn.Linear(32, 32), nn.Linear(32, 10)

    def forward(self, raw: torch.Tensor) -> torch.Tensor:
        x = raw.flatten(1) / 16
        return self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


def train_foreign_members() -> list[ForeignMLP]:
    """The plain-torch script: scikit-learn's digits as they come, full-batch Adam, one seed each."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.tensor(digits.images[:1200], dtype=torch.float32)  # raw values in [0, 16]
    labels = torch.tensor(digits.target[:1200])
    members = []
    for seed in range(MEMBERS):
        torch.manual_seed(100 + seed)
        net = ForeignMLP()
        optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
        for _ in range(60):
            optimizer.zero_grad()
            nn.functional.cross_entropy(net(images), labels).backward()
            optimizer.step()
        members.append(net.eval())
    return members


@pytest.fixture(scope="module")
def foreign(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[ForeignMLP], Path]:
    """The members, saved one file each as training checkpoints ({"state_dict": ..., "epoch": ...})."""
    members = train_foreign_members()
    folder = tmp_path_factory.mktemp("foreign")
    for k, net in enumerate(members):
        torch.save({"state_dict": net.state_dict(), "epoch": 60}, folder / f"member-{k}.pt")
    return members, folder


def real_raw_inputs() -> tuple[torch.Tensor, torch.Tensor]:
    """The project's digits test split as raw values (what a user feeds) and its labels."""
    dataset = load_dataset("digits")
    return raw_inputs(dataset, dataset.test.images), dataset.test.labels


def test_every_imported_member_predicts_what_its_source_module_does(foreign, tmp_path: Path) -> None:
    members, folder = foreign
    manifest = import_zoo(
        "mlp-digits",
        folder,
        tmp_path / "zoo",
        preprocessing=Standardize(scale=16.0),
        trained_on="the first 1,200 of scikit-learn's digits",
        saw_validation=True,
    )
    assert manifest.imported["key_map"]["fc1.weight"] == "layers.0.weight"
    assert manifest.imported["key_map"]["fc2.bias"] == "layers.1.bias"
    zoo = load_zoo(tmp_path / "zoo")
    contract = zoo.manifest.declared_input()
    assert contract.preprocessing == Standardize(scale=16.0) and contract.saw_validation
    raw, labels = real_raw_inputs()
    module = zoo.architecture.build().eval()
    for k, source in enumerate(members):
        module.load_state_dict({key: value[k] for key, value in zoo.stacked.items()})
        with torch.no_grad():
            expected, imported = source(raw), module(Preprocess(contract)(raw))
        torch.testing.assert_close(imported, expected, rtol=0, atol=1e-6)
        # the zoo's own evaluation fed the members as declared: its test accuracy is the source's
        accuracy = (expected.argmax(1) == labels).float().mean().item()
        assert zoo.manifest.members[k]["test_acc"] == pytest.approx(accuracy, abs=1e-6)
        assert accuracy > 0.8


def test_safetensors_folders_and_stacked_files_import_to_the_same_zoo(foreign, tmp_path: Path) -> None:
    members, folder = foreign
    per_file = tmp_path / "per-file"
    per_file.mkdir()
    for k, net in enumerate(members):  # safetensors stores keys alphabetically: fc1.bias before fc1.weight
        save_file(net.state_dict(), str(per_file / f"net{k}.safetensors"))
    stacked = {
        key: torch.stack([net.state_dict()[key] for net in members]) for key in members[0].state_dict()
    }
    save_file(stacked, str(tmp_path / "stacked.safetensors"))
    zoos = []
    for source, out in ((folder, "a"), (per_file, "b"), (tmp_path / "stacked.safetensors", "c")):
        import_zoo("mlp-digits", source, tmp_path / out, preprocessing=Standardize(scale=16.0))
        zoos.append(load_zoo(tmp_path / out))
    for zoo in zoos[1:]:
        assert all(torch.equal(zoo.stacked[k], zoos[0].stacked[k]) for k in zoos[0].stacked)
        assert zoo.manifest.members == zoos[0].manifest.members


def test_refusals_name_the_key_the_expected_shape_and_the_fix(foreign, tmp_path: Path) -> None:
    members, _ = foreign
    with pytest.raises(KeyMapError, match=r"expects layers\.0\.weight of shape \(128, 784\).*--key-map"):
        map_keys(
            {k: tuple(v.shape) for k, v in members[0].state_dict().items()},
            {"layers.0.weight": (128, 784), "layers.0.bias": (128,)},
            "mlp-fashion",
        )
    # shapes that do not pair module by module (two same-shaped layers, both biases first) need rules
    source = {"a.weight": (4, 4), "b.bias": (4,), "b.weight": (4, 4), "a.bias": (4,)}
    target = {"x.weight": (4, 4), "x.bias": (4,), "y.weight": (4, 4), "y.bias": (4,)}
    with pytest.raises(KeyMapError, match="do not pair up module by module.*--key-map"):
        map_keys(source, target, "toy")
    assert map_keys(source, target, "toy", {"a": "y", "b": "x"})["a.bias"] == "y.bias"
    with pytest.raises(KeyMapError, match="rule c=x matches no checkpoint key"):
        map_keys(source, target, "toy", {"c": "x"})


def test_pickled_modules_are_refused_unless_allowed(foreign, tmp_path: Path) -> None:
    members, _ = foreign
    folder = tmp_path / "pickled"
    folder.mkdir()
    for k, net in enumerate(members[:3]):
        torch.save(net, folder / f"m{k}.pt")  # the whole module: loading it runs pickled code
    with pytest.raises(CheckpointError, match="--allow-pickle"):
        import_zoo("mlp-digits", folder, tmp_path / "refused", preprocessing=Standardize(scale=16.0))
    assert not (tmp_path / "refused").exists()
    manifest = import_zoo(
        "mlp-digits", folder, tmp_path / "allowed", preprocessing=Standardize(scale=16.0), allow_pickle=True
    )
    assert manifest.size == 3


def test_import_canonicalize_build_generate_end_to_end(foreign, tmp_path: Path) -> None:
    _, folder = foreign
    zoo, generators = tmp_path / "zoo", tmp_path / "generators"
    steps = [
        ["zoo", "import", "mlp-digits", str(folder), "--out", str(zoo), "--input-scale", "16"]
        + ["--trained-on", "the first 1,200 of scikit-learn's digits", "--saw-validation"],
        ["zoo", "canonicalize", str(zoo), "--template", "medoid"],
        ["generator", "build", "mlp-digits", "--zoo", str(zoo), "--generators", str(generators)]
        + ["--iterations", "300", "--hidden", "64", "--evaluate-count", "0"],
        ["generate", "mlp-digits", "-n", "8", "--seed", "3", "--generators", str(generators)]
        + ["--output", str(tmp_path / "nets.safetensors")],
    ]
    outputs = []
    for args in steps:
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
        outputs.append(result.output)
    assert "imported 6 members" in outputs[0] and "fc1.weight -> layers.0.weight" in outputs[0]
    assert "not held out" in outputs[0] and "not held out" in outputs[2]

    card = read_card(generators / "mlp-digits")
    assert card.input.preprocessing == Standardize(scale=16.0) and card.input.saw_validation
    assert card.input.trained_on == "the first 1,200 of scikit-learn's digits"
    assert card.zoo.recipe == {"imported": True, "trained_on": card.input.trained_on}
    assert (
        json.loads((zoo / "canonical" / "medoid" / "manifest.json").read_text())["input"]
        == card.input.model_dump()
    )

    ensemble = load_stacked(tmp_path / "nets.safetensors")
    assert ensemble.input_contract == card.input
    raw, labels = real_raw_inputs()
    accuracy = (ensemble.predict(raw).argmax(2) == labels).float().mean(1)  # (8,) fed raw / 16
    assert accuracy.mean() > 0.7, f"generated networks fed x / 16: {accuracy.tolist()}"


def test_tabular_members_with_per_feature_statistics_from_files(tmp_path: Path) -> None:
    """Members standardizing each of the 30 features with their own statistics, declared as files."""
    from sklearn.datasets import load_breast_cancer

    table = load_breast_cancer()
    rows, labels = torch.tensor(table.data, dtype=torch.float32), torch.tensor(table.target)
    mean, std = rows.mean(0), rows.std(0)
    (tmp_path / "mean.json").write_text(json.dumps(mean.tolist()))
    (tmp_path / "std.txt").write_text("\n".join(str(v) for v in std.tolist()))
    folder = tmp_path / "members"
    folder.mkdir()
    members = []
    for seed in range(3):
        torch.manual_seed(seed)
        net = nn.Sequential(nn.Linear(30, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 2))
        optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
        for _ in range(40):
            optimizer.zero_grad()
            nn.functional.cross_entropy(net((rows - mean) / std), labels).backward()
            optimizer.step()
        save_file(net.state_dict(), str(folder / f"net-{seed}.safetensors"))
        members.append(net.eval())

    args = ["zoo", "import", "mlp-breast-cancer", str(folder), "--out", str(tmp_path / "zoo")]
    args += ["--input-mean", str(tmp_path / "mean.json"), "--input-std", str(tmp_path / "std.txt")]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    zoo = load_zoo(tmp_path / "zoo")
    contract = zoo.manifest.declared_input()
    assert contract.preprocessing.mean == pytest.approx(mean.tolist())
    dataset = load_dataset("breast-cancer")
    raw = raw_inputs(dataset, dataset.test.images)
    module = zoo.architecture.build().eval()
    for k, source in enumerate(members):
        module.load_state_dict({key: value[k] for key, value in zoo.stacked.items()})
        with torch.no_grad():
            expected = source((raw - mean) / std)
            torch.testing.assert_close(module(Preprocess(contract)(raw)), expected, rtol=0, atol=1e-5)
        accuracy = (expected.argmax(1) == dataset.test.labels).float().mean().item()
        assert zoo.manifest.members[k]["test_acc"] == pytest.approx(accuracy, abs=1e-6) and accuracy > 0.85

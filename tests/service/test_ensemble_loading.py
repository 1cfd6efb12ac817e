"""load_ensemble / load_stacked on a result file written the way the worker writes it."""

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from contract.result_file import ResultMetadata
from deepweightflow.ensemble import load_ensemble, load_stacked
from models.architectures import get_architecture
from models.generator import GeneratedEnsemble, write_result
from models.weightspace import StateDictError, stack_state_dicts


@pytest.fixture(scope="module")
def originals() -> list[torch.nn.Module]:
    architecture = get_architecture("cnn-fashion")  # has BatchNorm buffers, which must round-trip too
    networks = []
    for seed in range(3):
        torch.manual_seed(seed)
        network = architecture.build()
        for module in network.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-1, 1)
                module.running_var.uniform_(0.5, 2)
        networks.append(network.eval())
    return networks


@pytest.fixture(scope="module")
def result(originals: list[torch.nn.Module], tmp_path_factory: pytest.TempPathFactory) -> Path:
    state = stack_state_dicts([n.state_dict() for n in originals])
    metadata = ResultMetadata(
        job_id="j",
        architecture="cnn-fashion",
        generator_version="1",
        count=3,
        seed=4,
        sampler="rk4",
        steps=8,
        val_accuracy=[0.25, 0.5, 0.75],
    )
    path = tmp_path_factory.mktemp("result") / "job.safetensors"
    write_result(path, GeneratedEnsemble(state, metadata))
    return path


def test_networks_are_ready_modules_equal_to_the_originals(originals, result: Path) -> None:
    networks = load_ensemble(result)
    x = torch.randn(5, 1, 28, 28)
    assert len(networks) == 3
    with torch.no_grad():
        for loaded, original in zip(networks, originals, strict=True):
            assert not loaded.training
            assert torch.equal(loaded(x), original(x))
    networks[0].head.weight.data.zero_()  # each module owns its weights
    assert networks[1].head.weight.abs().sum() > 0


def test_stacked_form_runs_all_networks_in_one_pass(originals, result: Path) -> None:
    stacked = load_stacked(result)
    assert stacked.count == 3 and stacked.metadata.job_id == "j" and stacked.metadata.format == "pt"
    assert stacked.val_accuracy == [0.25, 0.5, 0.75]
    x = torch.randn(4, 1, 28, 28)
    logits = stacked.forward(x)
    assert logits.shape == (3, 4, 10)
    with torch.no_grad():
        for k, original in enumerate(originals):
            assert torch.allclose(logits[k], original(x), atol=1e-5)


def test_files_that_are_not_results_are_refused(result: Path, tmp_path: Path) -> None:
    bare = tmp_path / "bare.safetensors"
    save_file({"w": torch.zeros(2, 3)}, str(bare))
    with pytest.raises(ValueError, match="names no architecture"):
        load_stacked(bare)
    wrong = tmp_path / "wrong.safetensors"
    save_file({"w": torch.zeros(2, 3)}, str(wrong), metadata={"architecture": "mlp-digits"})
    with pytest.raises(StateDictError, match="missing keys"):
        load_ensemble(wrong)
    assert load_stacked(result).metadata.val_accuracy == [0.25, 0.5, 0.75]

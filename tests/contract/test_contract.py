"""The torch-free contract every package shares: result metadata, input contracts, cards, files."""

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from contract.card import read_card_file
from contract.files import atomic_write, atomic_write_text, replace_directory
from contract.inputs import InputContract, Standardize
from contract.jobs import JobRequest, JobSummary
from contract.result_file import ResultMetadata, read_result_metadata
from deepweightflow.preprocessing import Preprocess
from models.generator import GeneratedEnsemble, write_result
from models.zoo.datasets import load_digits_dataset, raw_pixels

REPO = Path(__file__).resolve().parents[2]
CONTRACT = InputContract(
    dataset="digits",
    shape=[1, 8, 8],
    dtype="float32",
    value_range=[0, 16],
    preprocessing=Standardize(scale=16, mean=0.3, std=0.4),
    classes=[str(d) for d in range(10)],
    trained_on="a test",
)


def test_the_api_and_the_contract_import_no_torch() -> None:
    code = (
        "import sys, contract.card, contract.jobs, contract.result_file, contract.files, service.main, "
        "deepweightflow.client; print('torch' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_result_metadata_round_trips_through_the_file_header(tmp_path: Path) -> None:
    metadata = ResultMetadata(
        job_id="j1",
        architecture="mlp-digits",
        generator_version="2",
        count=2,
        seed=5,
        sampler="rk4",
        steps=16,
        val_accuracy=[0.5, 0.25],
        screening_candidates=8,
        screening_accepted=2,
        screening_filled=0,
        input_contract=CONTRACT,
    )
    strings = metadata.to_strings()
    assert strings["count"] == "2" and strings["val_accuracy"] == "[0.5, 0.25]"
    assert "(x / 16 - 0.3) / 0.4" in strings["usage"]
    assert ResultMetadata.from_strings(strings) == metadata
    path = tmp_path / "result.safetensors"
    write_result(path, GeneratedEnsemble({"w": torch.zeros(2, 3)}, metadata))
    assert read_result_metadata(path) == metadata  # read from the header alone, without torch
    assert metadata.screening_counts() == {"candidates": 8, "accepted": 2, "filled": 0}


def test_result_metadata_refuses_what_is_not_a_result(tmp_path: Path) -> None:
    bare = tmp_path / "bare.safetensors"
    save_file({"w": torch.zeros(1)}, str(bare))
    with pytest.raises(ValueError, match="names no architecture"):
        read_result_metadata(bare)
    (tmp_path / "text.safetensors").write_text("hello")
    with pytest.raises(ValueError, match="not a safetensors file"):
        read_result_metadata(tmp_path / "text.safetensors")


def test_job_request_and_summary_are_what_crosses_the_queue() -> None:
    request = JobRequest(architecture="mlp-digits", count=3, seed=1, sampler="rk4", steps=8)
    assert JobRequest.model_validate(request.model_dump()) == request
    with pytest.raises(ValueError, match="extra"):
        JobRequest.model_validate({**request.model_dump(), "counts": 4})
    metadata = ResultMetadata(
        architecture="a", generator_version="2", count=3, seed=1, sampler="rk4", steps=8
    )
    summary = JobSummary(metadata=metadata, size_bytes=10, expires_at=1.5)
    assert JobSummary.model_validate(summary.model_dump(mode="json")) == summary


def test_preprocess_from_the_contract_gives_the_training_inputs_exactly() -> None:
    dataset = load_digits_dataset()
    contract = dataset.input_contract((1, 8, 8), "digits train split")
    raw = raw_pixels(dataset.test.images, dataset.pixel_stats)  # the raw 0..16 values
    assert torch.equal(Preprocess(contract)(raw), dataset.test.images)
    assert torch.equal(Preprocess(contract)(raw.flatten(1)), dataset.test.images)  # flat rows too
    with pytest.raises(ValueError, match=r"do not fit the networks' input \(1, 8, 8\)"):
        Preprocess(contract)(torch.zeros(2, 28, 28))


def test_per_feature_preprocessing_for_tabular_inputs() -> None:
    contract = CONTRACT.model_copy(
        update={"shape": [3], "preprocessing": Standardize(scale=1, mean=[1, 2, 3], std=[1, 2, 4])}
    )
    x = torch.tensor([[1.0, 4.0, 11.0]])
    assert torch.equal(Preprocess(contract)(x), torch.tensor([[0.0, 1.0, 2.0]]))
    assert "per feature" in contract.usage()


@pytest.mark.parametrize(
    "name", ["mlp-digits", "mlp-fashion", "cnn-fashion", "mlp-breast-cancer", "mlp-mnist1d", "cnn-mnist1d"]
)
def test_shipped_cards_are_typed_and_carry_their_input_contract(name: str) -> None:
    card = read_card_file(REPO / "generators" / name / "card.json")
    assert card.input.dataset == card.dataset["name"] and card.input.shape == card.architecture.input_shape
    assert len(card.input.classes) == card.architecture.config["num_classes"] and card.input.trained_on


def test_a_card_without_an_input_contract_is_refused_naming_the_field(tmp_path: Path) -> None:
    card = read_card_file(REPO / "generators" / "mlp-digits" / "card.json").model_dump()
    del card["input"]
    (tmp_path / "card.json").write_text(json.dumps(card))
    with pytest.raises(ValueError, match="input"):
        read_card_file(tmp_path / "card.json")


def test_atomic_write_publishes_whole_files_with_the_umask_mode(tmp_path: Path) -> None:
    target = tmp_path / "out.safetensors"
    atomic_write(target, lambda path: save_file({"w": torch.zeros(1)}, str(path)))  # safetensors makes 0600
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~_umask()

    def fails(path: Path) -> None:
        path.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, fails)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.safetensors"], "no partial file left"
    atomic_write_text(target, "new")
    assert target.read_text() == "new"


def test_replace_directory_swaps_a_folder_whole(tmp_path: Path) -> None:
    folder = tmp_path / "artifact"
    replace_directory(folder, lambda staging: (staging / "a").write_text("1"))
    replace_directory(folder, lambda staging: (staging / "b").write_text("2"))
    assert [p.name for p in folder.iterdir()] == ["b"]
    with pytest.raises(RuntimeError):
        replace_directory(folder, lambda staging: (_ for _ in ()).throw(RuntimeError("build failed")))
    assert [p.name for p in tmp_path.iterdir()] == ["artifact"] and (folder / "b").read_text() == "2"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask

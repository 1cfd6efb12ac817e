"""Every shipped generator through the running service: POST /generate, poll, download, load; the
served networks are bit-identical to the same request generated in this process."""

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from bench.service_latency import embedded_server
from deepweightflow.client import Client
from deepweightflow.ensemble import load_ensemble, load_stacked
from models.generator import Generator, discover_generators, read_card

SHIPPED = discover_generators(Path(__file__).resolve().parents[2] / "generators")


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    """`dwf serve` offering every shipped generator, on CPU with one thread like this process."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DWF_DEVICE", "cpu")
        patch.setenv("OMP_NUM_THREADS", "1")
        with embedded_server(list(SHIPPED.values())) as url:
            yield url


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_each_family_is_served_and_matches_in_process_generation(
    name: str, server: str, tmp_path: Path
) -> None:
    with Client(server) as client:
        offered = {entry["name"] for entry in client.architectures()}
        assert name in offered
        job = client.generate(name, count=3, seed=11).wait(timeout=600)
        path = job.download(tmp_path)
    served = load_file(str(path))
    in_process = Generator.load(SHIPPED[name], device="cpu").generate(3, 11, evaluate=False).state
    assert served.keys() == in_process.keys()
    assert all(torch.equal(served[key], in_process[key]) for key in served), "same seed, same bytes"
    stacked = load_stacked(path)
    assert stacked.metadata.input_contract == read_card(SHIPPED[name]).input
    assert len(load_ensemble(path, with_preprocessing=True)) == 3

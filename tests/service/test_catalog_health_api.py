"""GET /architectures, /healthz, /readyz, /metrics, /docs and the optional API key."""

import subprocess
import sys
import uuid
from pathlib import Path

from fastapi.testclient import TestClient
from rq import Queue, Worker

from contract.files import replace_directory
from service.catalog import CatalogFolder
from service.main import create_app
from service.queue import SERIALIZER
from service.settings import Settings, get_settings
from tests.service.conftest import api_card


def test_architectures_lists_the_installed_generators_with_their_cards(api: TestClient) -> None:
    response = api.get("/architectures")
    assert response.status_code == 200
    cards = {card["name"]: card for card in response.json()["architectures"]}
    assert sorted(cards) == ["mlp-digits", "mlp-fashion"]  # the half-written dot folder is not offered
    fashion = cards["mlp-fashion"]
    assert fashion["parameter_count"] == 118282
    assert (
        fashion["zoo_accuracy"]
        == fashion["generated_accuracy"]
        == {"mean": 0.9, "std": 0.01, "min": 0.88, "max": 0.92}
    )
    assert fashion["sampler"] == {"method": "rk4", "steps": 20}
    assert fashion["card"]["architecture"]["family"] == "mlp"
    # the input contract travels with every entry (issue 11): shape, range, preprocessing, classes
    assert fashion["input"]["shape"] == [1, 8, 8] and fashion["input"]["preprocessing"]["scale"] == 16
    assert fashion["input"]["classes"] == [str(d) for d in range(10)]
    assert "(x / 16 - 0.305065) / 0.375984" in fashion["usage"]


def test_healthz_is_up(api: TestClient) -> None:
    assert api.get("/healthz").json() == {"status": "ok"}


def test_readyz_needs_a_worker_on_the_queue(api: TestClient, queue: Queue) -> None:
    response = api.get("/readyz")
    assert response.status_code == 503
    assert response.headers["content-type"] == "application/problem+json"
    assert "no worker" in response.json()["detail"]

    worker = Worker([queue], connection=queue.connection, serializer=SERIALIZER, name=uuid.uuid4().hex)
    worker.register_birth()
    try:
        response = api.get("/readyz")
        assert response.status_code == 200
        assert response.json()["workers"] == 1
    finally:
        worker.register_death()


def test_readyz_is_503_when_redis_is_unreachable(settings: Settings) -> None:
    broken = settings.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"})
    app = create_app(broken)
    app.dependency_overrides[get_settings] = lambda: broken
    with TestClient(app) as client:
        response = client.get("/readyz")
    assert response.status_code == 503
    assert "unreachable" in response.json()["detail"]


def test_metrics_count_requests_by_route_template(api: TestClient) -> None:
    api.get("/jobs/0123456789abcdef")
    api.post("/generate", json={"architecture": "mlp-digits", "count": 1})
    text = api.get("/metrics").text
    assert 'dwf_http_requests_total{method="GET",route="/jobs/{job_id}",status="404"}' in text
    assert 'dwf_jobs_submitted_total{architecture="mlp-digits"}' in text
    assert "dwf_queue_jobs 1.0" in text


def test_openapi_documents_every_route(api: TestClient) -> None:
    paths = api.get("/openapi.json").json()["paths"]
    for path in ("/generate", "/jobs/{job_id}", "/jobs/{job_id}/weights", "/architectures", "/readyz"):
        assert path in paths
    assert api.get("/docs").status_code == 200


def test_api_key_guards_the_job_routes_but_not_health(settings: Settings) -> None:
    keyed = settings.model_copy(update={"api_key": "s3cret"})
    app = create_app(keyed)
    app.dependency_overrides[get_settings] = lambda: keyed
    with TestClient(app) as client:
        response = client.get("/architectures")
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"
        assert client.get("/architectures", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert client.get("/architectures", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert client.get("/healthz").status_code == 200


def test_settings_refuse_records_that_expire_before_their_results() -> None:
    try:
        Settings(result_ttl=100, job_ttl=10)
    except ValueError as error:
        assert "410" in str(error)
    else:
        raise AssertionError("job_ttl < result_ttl was accepted")


def test_the_api_and_the_http_client_never_import_torch() -> None:
    code = (
        "import sys, service.main, service.embedded, deepweightflow.client, deepweightflow.ensemble, "
        "deepweightflow.service_cli; "
        "print(sorted(m for m in ('torch', 'models', 'worker') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "[]"


def test_the_catalog_follows_the_generators_folder_without_a_restart(tmp_path: Path) -> None:
    def publish(name: str, card_name: str) -> None:
        replace_directory(
            tmp_path / name, lambda d: (d / "card.json").write_text(api_card(card_name, 7).to_json())
        )

    folder = CatalogFolder(tmp_path)
    assert folder.current().names == []
    publish("first", "first")
    catalog = folder.current()
    assert catalog.names == ["first"] and folder.current() is catalog  # unchanged: nothing re-read
    publish("second", "second")
    publish(".being-written", "nope")
    assert folder.current().names == ["first", "second"]
    publish("first", "replaced")  # a new artifact swapped into the same folder name
    assert folder.current().cards["first"].architecture.name == "replaced"
    (tmp_path / "second" / "card.json").write_text("{not json")  # unreadable: not offered
    assert folder.current().names == ["first"]
    (tmp_path / "first" / "card.json").unlink()
    assert folder.current().names == []

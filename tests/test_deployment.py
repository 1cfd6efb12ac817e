"""docker-compose.yml, its CPU override and the Dockerfile have what a deployment relies on."""

import os
import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


class ComposeLoader(yaml.SafeLoader):
    """YAML as compose reads it, including its `!reset` tag."""


ComposeLoader.add_constructor("!reset", lambda loader, node: {"!reset": loader.construct_mapping(node)})


def _load(name: str) -> dict:
    return yaml.load((REPO / name).read_text(), Loader=ComposeLoader)  # noqa: S506 - a SafeLoader subclass


@pytest.fixture(scope="module")
def services() -> dict:
    return _load("docker-compose.yml")["services"]


def test_redis_has_a_healthcheck_and_persists(services: dict) -> None:
    redis = services["redis"]
    assert redis["image"].startswith("redis:")
    assert redis["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    assert any(v.endswith(":/data") for v in redis["volumes"])


def test_api_and_worker_run_the_right_commands_after_redis_is_healthy(services: dict) -> None:
    assert services["api"]["command"] == ["python", "-m", "service"]
    assert services["worker"]["command"] == ["python", "-m", "worker"]
    for name in ("api", "worker"):
        service = services[name]
        assert service["depends_on"]["redis"]["condition"] == "service_healthy"
        assert service["environment"]["REDIS_URL"] == "redis://redis:6379/0"
        assert service["build"]["context"] == "." and "TORCH_VARIANT" in service["build"]["args"]
        assert service["image"] == services["api"]["image"]  # one image for both


def test_api_publishes_its_port_and_checks_its_health(services: dict) -> None:
    api = services["api"]
    assert any(p.endswith(":8000") for p in api["ports"])
    assert api["environment"]["DWF_HOST"] == "0.0.0.0"
    test = " ".join(api["healthcheck"]["test"])
    assert "/healthz" in test and "8000" in test


def test_worker_reserves_a_gpu_and_can_scale(services: dict) -> None:
    worker = services["worker"]
    device = worker["deploy"]["resources"]["reservations"]["devices"][0]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    assert "container_name" not in worker and "ports" not in worker  # `--scale worker=N` needs neither
    assert "python" in worker["healthcheck"]["test"] and "rq.Worker" in worker["healthcheck"]["test"][-1]
    assert worker["stop_grace_period"]


def _mount(volume: str) -> tuple[str, str]:
    """A short-syntax volume, source:target[:ro] -> (target, source); the source may hold ${VAR:-x}."""
    source, target = volume.removesuffix(":ro").rsplit(":", 1)
    return target, source


def test_api_and_workers_share_results_and_generators(services: dict) -> None:
    compose = _load("docker-compose.yml")
    mounts = {name: dict(_mount(v) for v in services[name]["volumes"]) for name in ("api", "worker")}
    assert mounts["api"] == mounts["worker"]
    assert mounts["api"]["/data/results"] == "results" and "results" in compose["volumes"]
    assert mounts["api"]["/data/generators"] == "${DWF_GENERATORS_HOST_DIR:-./generators}"
    for name in ("api", "worker"):
        env = services[name]["environment"]
        assert env["DWF_RESULTS_DIR"] == "/data/results" and env["DWF_GENERATORS_DIR"] == "/data/generators"


def test_cpu_override_drops_only_the_gpu_reservation() -> None:
    override = _load("docker-compose.cpu.yml")["services"]
    assert override == {"worker": {"deploy": {"!reset": {}}}}


def test_dockerfile_is_cpu_by_default_cuda_by_build_argument() -> None:
    text = (REPO / "Dockerfile").read_text()
    assert re.search(r"^FROM \$\{PYTHON_IMAGE\}$", text, re.M) and "ARG PYTHON_IMAGE=python:3.11" in text
    assert re.search(r"^ARG TORCH_VARIANT=cpu$", text, re.M)
    install = re.search(r"^RUN pip install \"torch==\$\{TORCH_VERSION\}\".*\$\{TORCH_VARIANT\}", text, re.M)
    assert install, "torch must come from the TORCH_VARIANT index"
    assert text.index("torch==") < text.index("RUN pip install .")  # torch first, then the project
    for package in ("models", "service", "worker", "deepweightflow"):
        assert f"COPY {package} ./{package}" in text
    assert re.search(r"^USER \w+", text, re.M), "run as an unprivileged user"
    assert "DWF_RESULTS_DIR=/data/results" in text and "DWF_GENERATORS_DIR=/data/generators" in text
    assert re.search(r'^CMD \["python", "-m", "service"\]$', text, re.M)
    assert "EXPOSE 8000" in text


def test_dockerignore_keeps_the_build_context_small() -> None:
    ignored = set((REPO / ".dockerignore").read_text().split())
    assert {".git", ".venv", "generators", "var", "tests"} <= ignored


def test_api_keys_and_limits_reach_the_api(services: dict) -> None:
    env = services["api"]["environment"]
    assert env["DWF_API_KEYS"] == "${DWF_API_KEYS:-}" and env["DWF_API_KEY"] == "${DWF_API_KEY:-}"
    assert env["DWF_RATE_LIMIT_PER_MINUTE"] == "${DWF_RATE_LIMIT_PER_MINUTE:-600}"
    assert env["DWF_MAX_QUEUED_JOBS_PER_KEY"] == "${DWF_MAX_QUEUED_JOBS_PER_KEY:-100}"
    assert "DWF_API_KEYS" not in services["worker"]["environment"]  # workers never see the keys


def _default(value: str) -> str:
    """What compose puts in the environment for `${VAR:-default}` with VAR unset: the default."""
    match = re.fullmatch(r"\$\{(\w+):-([^}]*)\}", value)
    assert match, f"{value!r} is not ${{VAR:-default}}"
    return match.group(2)


@pytest.mark.parametrize("name", ["api", "worker"])
def test_the_compose_defaults_are_the_settings_defaults(
    services: dict, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With nothing set on the host, every `${VAR:-default}` loads (an empty number or storage backend
    would not) and gives the app's own default."""
    from service.settings import Settings

    env = services[name]["environment"]
    assert env["DWF_STORAGE_BACKEND"] == "${DWF_STORAGE_BACKEND:-local}"
    assert {"DWF_JOB_HEARTBEAT_TTL", "DWF_JOB_RETRIES", "DWF_S3_BUCKET", "DWF_S3_ENDPOINT_URL"} <= set(env)
    for key in [k for k in os.environ if k.startswith("DWF_") or k == "REDIS_URL"]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, _default(value) if str(value).startswith("${") else str(value))
    settings = Settings()
    assert settings.storage_backend == "local" and settings.s3_bucket is None and settings.s3_region is None
    for field in ("rate_limit_per_minute", "max_queued_jobs_per_key", "job_heartbeat_ttl", "job_retries"):
        assert getattr(settings, field) == Settings.model_fields[field].default, field
    assert settings.s3_prefix == Settings.model_fields["s3_prefix"].default
    assert settings.all_api_keys == ()


def test_the_package_metadata_reads_without_a_setuptools_warning() -> None:
    """Found by a user: the install warned that `license = { text = "MIT" }` is deprecated."""
    import warnings

    from setuptools.config.pyprojecttoml import apply_configuration
    from setuptools.dist import Distribution

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        distribution = apply_configuration(Distribution(), REPO / "pyproject.toml")
    assert [str(w.message) for w in caught] == []
    assert distribution.metadata.license_expression == "MIT"

"""deepweightflow.Client against the real API (uvicorn in a thread, real Redis): 401, 403, 429 and 503
answers become typed exceptions carrying the problem's `detail` (and, for 429 and 503, the
Retry-After seconds); `dwf generate --server` prints them and exits 1 without a traceback."""

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from deepweightflow import service_cli
from deepweightflow.client import Client, Job
from deepweightflow.errors import (
    APIError,
    ForbiddenError,
    RateLimitedError,
    ServerError,
    ServiceUnavailableError,
    Unauthorized,
    parse_retry_after,
)
from service.problems import REDIS_RETRY_AFTER_S
from service.ratelimit import QUEUE_FULL_RETRY_AFTER_S
from service.settings import Settings
from tests.service.stack import app_for, free_port, serve_in_thread

ALICE, BOB = "alice-key-0001", "bob-key-0002"


@contextmanager
def server(settings: Settings, **changes: object) -> Iterator[str]:
    """The API with `settings` changed by `changes`, over real HTTP; yields its base URL."""
    with serve_in_thread(app_for(settings.model_copy(update=changes))) as url:
        yield url


def _dwf_generate(url: str, *options: str) -> tuple[int, str]:
    """`dwf generate mlp-digits --server url ...options`: its exit code and output (stdout and stderr)."""
    result = CliRunner().invoke(
        service_cli.app, ["generate", "mlp-digits", "-n", "1", "--server", url, *options]
    )
    assert isinstance(result.exception, SystemExit), result.exception  # typer.Exit, not an exception escaping
    assert "Traceback" not in result.output
    return result.exit_code, result.output


@pytest.fixture(autouse=True)
def _no_key_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DWF_API_KEY", raising=False)


def test_a_missing_or_wrong_key_raises_unauthorized(settings: Settings) -> None:
    with server(settings, api_keys=[ALICE]) as url:
        for key in (None, "wrong"):
            with Client(url, api_key=key, retries=0) as client, pytest.raises(Unauthorized) as raised:
                client.generate("mlp-digits", 1)
            assert raised.value.status == 401 and "Authorization: Bearer <api key>" in raised.value.detail
            assert raised.value.retry_after is None
        code, output = _dwf_generate(url, "--api-key", "wrong")
    assert code == 1
    assert "error: 401: a valid `Authorization: Bearer <api key>` header is required" in output


def test_another_keys_job_raises_forbidden_on_every_route(settings: Settings, tmp_path: Path) -> None:
    with server(settings, api_keys=[ALICE, BOB]) as url, Client(url, api_key=ALICE) as alice:
        job = alice.generate("mlp-digits", 1)
        with Client(url, api_key=BOB, retries=0) as bob:
            calls = (
                lambda: bob.job(job.id),
                lambda: bob.download(job.id, tmp_path),
                lambda: Job(bob, job.data).cancel(),
            )
            for call in calls:
                with pytest.raises(ForbiddenError) as raised:
                    call()
                assert isinstance(raised.value, APIError) and raised.value.status == 403
                assert raised.value.detail == f"job {job.id} belongs to another API key"
        assert alice.job(job.id).status == "queued"  # its owner still sees it


def test_over_the_rate_limit_raises_rate_limited_with_retry_after(settings: Settings) -> None:
    with server(settings, rate_limit_per_minute=1) as url:
        with Client(url) as client:
            client.generate("mlp-digits", 1)
            with pytest.raises(RateLimitedError) as raised:
                client.generate("mlp-digits", 1)
        error = raised.value
        assert isinstance(error, APIError) and error.status == 429
        assert 1 <= error.retry_after <= 60
        assert error.detail.startswith("at most 1 submissions per minute per API key; retry in ")
        code, output = _dwf_generate(url)
    assert code == 1
    assert "error: 429: at most 1 submissions per minute per API key; retry in " in output
    assert "Traceback" not in output


def test_a_full_queue_cap_raises_rate_limited_with_retry_after(settings: Settings) -> None:
    with server(settings, max_queued_jobs_per_key=1) as url, Client(url) as client:
        client.generate("mlp-digits", 1)
        with pytest.raises(RateLimitedError) as raised:
            client.generate("mlp-digits", 1)
    assert raised.value.retry_after == QUEUE_FULL_RETRY_AFTER_S
    assert raised.value.detail.startswith("at most 1 unfinished jobs per API key")


def test_redis_down_raises_service_unavailable_with_retry_after(settings: Settings) -> None:
    down = {"redis_url": f"redis://127.0.0.1:{free_port()}/0", "queue_name": "down"}
    with server(settings, **down) as url:
        with Client(url, retries=1, backoff=0.001) as client:
            for call in (lambda: client.generate("mlp-digits", 1), lambda: client.job("0123456789abcdef")):
                with pytest.raises(ServiceUnavailableError) as raised:
                    call()
                error = raised.value
                assert isinstance(error, ServerError) and error.status == 503  # still a ServerError
                assert error.retry_after == REDIS_RETRY_AFTER_S
                assert error.detail == "the job store (Redis) is unavailable; retry shortly"
        code, output = _dwf_generate(url)
    assert code == 1
    unavailable = "the job store (Redis) is unavailable; retry shortly"
    assert f"error: 503: {unavailable} (retry after {REDIS_RETRY_AFTER_S} s)" in output


def test_retry_after_is_read_as_seconds_or_as_a_date() -> None:
    now = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(" 0 ") == 0.0
    assert parse_retry_after("Wed, 01 Jan 2025 12:00:30 GMT", now=now) == 30.0
    assert parse_retry_after("Wed, 01 Jan 2025 11:59:00 GMT", now=now) == 0.0  # already past
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    assert parse_retry_after("-5") is None

"""deepweightflow.Client against a scripted server (httpx.MockTransport): typed errors, retries only
where idempotent, waiting, atomic downloads; and `dwf generate` / `dwf worker` failing clearly."""

from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from deepweightflow import service_cli
from deepweightflow.client import Client
from deepweightflow.errors import (
    APIError,
    ConnectionFailed,
    InvalidRequest,
    JobFailed,
    JobNotFinished,
    JobNotFound,
    ResultExpired,
    ServerError,
    WaitTimeout,
)
from service.settings import get_settings

REQUEST = {"architecture": "mlp-digits", "count": 2, "seed": 9, "sampler": "rk4", "steps": 20}


def _job(status: str, done: int = 0, **extra) -> dict:
    return {"id": "j1", "status": status, "request": REQUEST, "progress": {"done": done, "total": 2}, **extra}


def _problem(status: int, **extra) -> httpx.Response:
    body = {"type": "about:blank", "title": "x", "status": status, "detail": f"problem {status}", **extra}
    return httpx.Response(status, json=body, headers={"content-type": "application/problem+json"})


class Script:
    """Answers requests from a list, recording them."""

    def __init__(self, *answers):
        self.answers, self.requests = list(answers), []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    def client(self, **kwargs) -> Client:
        return Client("http://dwf.test", transport=httpx.MockTransport(self), backoff=0.001, **kwargs)


def test_generate_sends_only_given_fields_and_returns_the_job() -> None:
    script = Script(httpx.Response(202, json=_job("queued")))
    job = script.client(api_key="k").generate("mlp-digits", 2, seed=9)
    request = script.requests[0]
    assert request.method == "POST" and request.url.path == "/generate"
    assert request.headers["authorization"] == "Bearer k"
    assert request.read() == b'{"architecture":"mlp-digits","count":2,"seed":9}'
    assert (job.id, job.status, job.seed, job.progress) == ("j1", "queued", 9, (0, 2))


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (422, InvalidRequest),
        (404, JobNotFound),
        (409, JobNotFinished),
        (410, ResultExpired),
        (500, ServerError),
        (418, APIError),
    ],
)
def test_problems_become_typed_exceptions(status: int, error: type) -> None:
    script = Script(_problem(status, errors=[{"loc": ["body", "count"], "msg": "bad"}]))
    with pytest.raises(error) as raised:
        script.client(retries=0).job("j1")
    assert raised.value.status == status and raised.value.detail == f"problem {status}"
    if status == 422:
        assert raised.value.errors == [{"loc": ["body", "count"], "msg": "bad"}]


def test_reads_are_retried_but_submissions_never() -> None:
    script = Script(_problem(503), httpx.ConnectError("refused"), httpx.Response(200, json=_job("started")))
    assert script.client().job("j1").status == "started"
    assert len(script.requests) == 3

    script = Script(_problem(503))
    with pytest.raises(ServerError):
        script.client().generate("mlp-digits", 1)
    script = Script(httpx.ConnectError("refused"))
    with pytest.raises(ConnectionFailed):
        script.client().generate("mlp-digits", 1)
    assert len(script.requests) == 1

    script = Script(*[httpx.ConnectError("refused")] * 3)
    with pytest.raises(ConnectionFailed):
        script.client(retries=2).job("j1")
    assert len(script.requests) == 3


def test_wait_polls_until_finished_and_raises_for_other_ends() -> None:
    script = Script(
        httpx.Response(200, json=_job("queued")),
        httpx.Response(200, json=_job("started", 1)),
        httpx.Response(200, json=_job("finished", 2, result={"val_accuracy": [0.5, 0.75]})),
    )
    job = script.client().job("j1")
    assert job.wait(poll_interval=0.001).val_accuracy == [0.5, 0.75] and job.progress == (2, 2)

    script = Script(
        httpx.Response(200, json=_job("started")), httpx.Response(200, json=_job("failed", error="E: x"))
    )
    with pytest.raises(JobFailed, match="j1 failed: E: x"):
        script.client().job("j1").wait(poll_interval=0.001)

    script = Script(*[httpx.Response(200, json=_job("started"))] * 50)
    with pytest.raises(WaitTimeout):
        script.client().job("j1").wait(timeout=0.01, poll_interval=0.005)


def test_download_names_the_file_as_the_server_does_and_is_atomic(tmp_path: Path) -> None:
    disposition = {"content-disposition": 'attachment; filename="mlp-digits-x2-seed9-j1.safetensors"'}
    script = Script(httpx.Response(200, content=b"weights", headers=disposition), _problem(410))
    client = script.client()
    path = client.download("j1", tmp_path)
    assert path == tmp_path / "mlp-digits-x2-seed9-j1.safetensors" and path.read_bytes() == b"weights"
    with pytest.raises(ResultExpired):
        client.download("j1", tmp_path / "other.safetensors")
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # nothing half-written


class BrokenStream(httpx.SyncByteStream):
    """A body that breaks off after its first bytes."""

    def __iter__(self):
        yield b"half"
        raise httpx.ReadError("connection reset")


def test_a_download_broken_off_is_retried_and_leaves_no_partial_file(tmp_path: Path) -> None:
    script = Script(httpx.Response(200, stream=BrokenStream()), httpx.Response(200, content=b"whole"))
    path = script.client().download("j1", tmp_path / "nets.safetensors")
    assert path.read_bytes() == b"whole" and len(script.requests) == 2
    script = Script(*[httpx.Response(200, stream=BrokenStream()) for _ in range(2)])
    with pytest.raises(ConnectionFailed):
        script.client(retries=1).download("j1", tmp_path / "other.safetensors")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nets.safetensors"]


def test_dwf_generate_reports_an_unreachable_server() -> None:
    runner = CliRunner()
    result = runner.invoke(service_cli.app, ["generate", "mlp-digits", "--server", "http://127.0.0.1:9"])
    assert result.exit_code == 1
    assert "error:" in result.output and "127.0.0.1:9" in result.output


def test_dwf_worker_needs_redis_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.delenv("DWF_REDIS_URL", raising=False)
    get_settings.cache_clear()  # read the environment afresh
    result = CliRunner().invoke(service_cli.app, ["worker"])
    get_settings.cache_clear()
    assert result.exit_code != 0 and "REDIS_URL is not set" in str(result.exception or result.output)

"""deepweightflow.Client with an idempotency key: the header is sent, the submission is retried like a
read (against a scripted server), and against the real API a repeat gives the same job."""

import httpx
import pytest
from rq import Queue

from deepweightflow.client import Client
from deepweightflow.errors import ConnectionFailed
from service.settings import Settings
from tests.service.stack import app_for, serve_in_thread

JOB = {
    "id": "j1",
    "status": "queued",
    "request": {"architecture": "mlp-digits", "count": 2, "seed": 9, "sampler": "rk4", "steps": 20},
    "progress": {"done": 0, "total": None},
}


def test_a_keyed_submission_is_retried_with_the_same_key() -> None:
    sent: list[httpx.Request] = []
    answers = [
        httpx.ConnectError("refused"),
        httpx.Response(503, json={"status": 503, "title": "Service Unavailable"}),
        httpx.Response(202, json=JOB),
    ]

    def server(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    with Client("http://dwf.test", transport=httpx.MockTransport(server), backoff=0.001) as client:
        job = client.generate("mlp-digits", 2, seed=9, idempotency_key="order-17")
    assert job.id == "j1" and len(sent) == 3
    assert {(r.method, r.headers["idempotency-key"], r.read()) for r in sent} == {
        ("POST", "order-17", b'{"architecture":"mlp-digits","count":2,"seed":9}')
    }

    def refusing(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused")

    with (
        Client(
            "http://dwf.test", transport=httpx.MockTransport(refusing), retries=2, backoff=0.001
        ) as client,
        pytest.raises(ConnectionFailed),
    ):
        client.generate("mlp-digits", 2, idempotency_key="order-18")


def test_a_repeated_key_gives_the_same_job_from_the_real_api(settings: Settings, queue: Queue) -> None:
    with serve_in_thread(app_for(settings)) as url, Client(url) as client:
        first = client.generate("mlp-digits", 3, idempotency_key="same")
        again = client.generate("mlp-digits", 3, idempotency_key="same")
        other = client.generate("mlp-digits", 3, idempotency_key="other")
    assert first.id == again.id != other.id
    assert first.seed == again.seed
    assert len(queue.job_ids) == 2

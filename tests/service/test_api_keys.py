"""Several API keys: each accepted, compared in constant time, jobs owned by the key that submitted them.

The app runs in process against the real Redis of tests/service/conftest.py.
"""

import hashlib
import hmac
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from rq import Queue
from rq.job import Job

from service import auth
from service.auth import ANONYMOUS, authenticate, fingerprint
from service.queue import SERIALIZER
from service.settings import Settings
from tests.service.stack import app_for

PROBLEM = "application/problem+json"
ALICE, BOB, CAROL = "alice-key-0001", "bob-key-0002", "carol-key-0003"
DIGITS = {"architecture": "mlp-digits", "count": 2, "seed": 3}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def keyed(settings: Settings) -> Iterator[TestClient]:
    """Keys from both settings: the list (DWF_API_KEYS) and the single key (DWF_API_KEY)."""
    with TestClient(app_for(settings.model_copy(update={"api_keys": [ALICE, BOB], "api_key": CAROL}))) as api:
        yield api


def _submit(api: TestClient, key: str) -> str:
    response = api.post("/generate", json=DIGITS, headers=bearer(key))
    assert response.status_code == 202, response.text
    return response.json()["id"]


def test_every_configured_key_is_accepted(keyed: TestClient) -> None:
    for key in (ALICE, BOB, CAROL):
        assert keyed.get("/architectures", headers=bearer(key)).status_code == 200
        assert keyed.get("/architectures", headers={"Authorization": f"bearer {key}"}).status_code == 200


@pytest.mark.parametrize(
    "headers",
    [
        {},
        bearer("wrong"),
        bearer(ALICE[:-1]),  # a prefix of a real key
        {"Authorization": ALICE},  # no scheme
        {"Authorization": f"Basic {ALICE}"},
        {"Authorization": "Bearer "},
    ],
)
def test_missing_or_wrong_keys_are_401_with_a_bearer_challenge(keyed: TestClient, headers: dict) -> None:
    for method, path in (("GET", "/architectures"), ("POST", "/generate"), ("GET", "/jobs/x")):
        response = keyed.request(method, path, headers=headers, json=DIGITS if method == "POST" else None)
        assert response.status_code == 401, (method, path, response.text)
        assert response.headers["www-authenticate"] == "Bearer"
        assert response.headers["content-type"] == PROBLEM
        assert response.json()["type"] == "/problems/unauthorized"
    assert keyed.get("/healthz", headers=headers).status_code == 200


def test_a_job_records_its_key_fingerprint_never_the_key(keyed: TestClient, queue: Queue) -> None:
    job = Job.fetch(_submit(keyed, BOB), connection=queue.connection, serializer=SERIALIZER)
    assert job.meta["owner"] == hashlib.sha256(BOB.encode()).hexdigest()[:16] == fingerprint(BOB)
    assert BOB not in str(job.to_dict())


def test_another_key_gets_403_on_every_route_of_the_job(keyed: TestClient, queue: Queue) -> None:
    job_id = _submit(keyed, ALICE)
    for method, path in (("GET", f"/jobs/{job_id}"), ("GET", f"/jobs/{job_id}/weights")):
        for key in (BOB, CAROL):
            response = keyed.request(method, path, headers=bearer(key))
            assert response.status_code == 403, response.text
            assert response.headers["content-type"] == PROBLEM
            assert response.json()["type"] == "/problems/forbidden"
    assert keyed.delete(f"/jobs/{job_id}", headers=bearer(BOB)).status_code == 403
    assert queue.job_ids == [job_id]  # the refused DELETE canceled nothing

    assert keyed.get(f"/jobs/{job_id}").status_code == 401  # no key: 401, not 403
    assert keyed.get(f"/jobs/{job_id}", headers=bearer(ALICE)).json()["status"] == "queued"
    assert keyed.get(f"/jobs/{job_id}/weights", headers=bearer(ALICE)).status_code == 409  # not finished
    assert keyed.delete(f"/jobs/{job_id}", headers=bearer(ALICE)).json()["status"] == "canceled"


def test_an_unknown_job_is_404_for_any_valid_key(keyed: TestClient) -> None:
    assert keyed.get("/jobs/0123456789abcdef", headers=bearer(BOB)).status_code == 404


def test_without_keys_every_job_is_everyones(api: TestClient, queue: Queue) -> None:
    job_id = api.post("/generate", json=DIGITS).json()["id"]
    job = Job.fetch(job_id, connection=queue.connection, serializer=SERIALIZER)
    assert job.meta["owner"] == ANONYMOUS
    job.meta["owner"] = fingerprint(ALICE)  # as if submitted while keys were configured
    job.save_meta()
    assert api.get(f"/jobs/{job_id}").status_code == 200
    assert api.get(f"/jobs/{job_id}/weights").status_code == 409
    assert api.delete(f"/jobs/{job_id}").status_code == 200


def test_every_key_is_compared_whichever_matches(monkeypatch: pytest.MonkeyPatch) -> None:
    """No early exit: the number of comparisons does not depend on which key (if any) matches."""
    comparisons: list[int] = []
    compare = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        assert len(a) == len(b) == 32  # digests: equal lengths, so no length-dependent timing either
        comparisons.append(1)
        return compare(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", counting)
    keys = (ALICE, BOB, CAROL)
    for token, owner in (
        (ALICE, fingerprint(ALICE)),
        (CAROL, fingerprint(CAROL)),
        ("nope", None),
        (None, None),
    ):
        comparisons.clear()
        caller = authenticate(token, keys)
        assert (caller.owner if caller else None) == owner
        assert len(comparisons) == len(keys)


def test_keys_come_from_dwf_api_keys_and_dwf_api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DWF_API_KEY", raising=False)
    monkeypatch.setenv("DWF_API_KEYS", f" {ALICE} ,{BOB},,")
    assert Settings().all_api_keys == (ALICE, BOB)
    monkeypatch.setenv("DWF_API_KEYS", f'["{ALICE}", "{BOB}"]')
    monkeypatch.setenv("DWF_API_KEY", CAROL)
    assert Settings().all_api_keys == (ALICE, BOB, CAROL)
    monkeypatch.setenv("DWF_API_KEYS", "")
    assert Settings().all_api_keys == (CAROL,)  # the single key alone still works
    monkeypatch.setenv("DWF_API_KEY", "")
    assert Settings().all_api_keys == ()  # auth off

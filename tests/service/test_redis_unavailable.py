"""With Redis unreachable, every route that needs it answers 503 problem details with Retry-After
(never a 500), and the routes that do not need it keep working. (Recovery once Redis is back,
over real HTTP with a real redis-server killed and restarted: tests/e2e/test_redis_outage.py.)"""

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.problems import REDIS_RETRY_AFTER_S
from service.settings import Settings
from tests.service.stack import app_for, free_port

REDIS_ROUTES = [
    ("POST", "/generate"),
    ("GET", "/jobs/0123456789abcdef"),
    ("GET", "/jobs/0123456789abcdef/weights"),
    ("DELETE", "/jobs/0123456789abcdef"),
]


@pytest.mark.parametrize("where", ["tcp", "unix"])
def test_routes_needing_redis_answer_503_when_it_is_unreachable(
    settings: Settings, tmp_path: Path, where: str
) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0" if where == "tcp" else f"unix://{tmp_path}/gone.sock"
    down = settings.model_copy(update={"redis_url": url, "queue_name": f"down-{where}"})
    with TestClient(app_for(down), raise_server_exceptions=False) as api:
        for method, path in REDIS_ROUTES:
            body = {"architecture": "mlp-digits", "count": 1} if method == "POST" else None
            response = api.request(method, path, json=body, headers={"Idempotency-Key": "k"})
            assert response.status_code == 503, (method, path, response.text)
            assert response.headers["content-type"] == "application/problem+json"
            assert response.headers["retry-after"] == str(REDIS_RETRY_AFTER_S)
            problem = response.json()
            assert problem["type"] == "/problems/redis-unavailable" and problem["instance"] == path
            assert url not in problem["detail"]  # the address is for the log, not for clients
        assert api.get("/readyz").status_code == 503
        assert api.get("/healthz").status_code == 200
        assert api.get("/architectures").status_code == 200
        assert api.get("/metrics").status_code == 200

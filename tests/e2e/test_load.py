"""The load test, scaled down: 100 submissions at concurrency 10 over loopback HTTP against `dwf serve`
(embedded Redis, a real worker, uvicorn), drained until every job has ended. No answer may be a 5xx
and every job must finish. (The full run, with its table: `python -m bench.service_load`.)
"""

import asyncio
from pathlib import Path

import pytest

from bench.service_latency import embedded_server
from bench.service_load import limits_for, run_load

ARTIFACT = Path(__file__).resolve().parents[2] / "generators" / "mlp-digits"
REQUESTS, CONCURRENCY = 100, 10

pytestmark = pytest.mark.skipif(
    not (ARTIFACT / "card.json").is_file(),
    reason=f"generator artifact {ARTIFACT} is absent: build it to run the end-to-end tests",
)


def test_every_submission_is_accepted_and_every_job_finishes() -> None:
    with limits_for(REQUESTS), embedded_server([ARTIFACT], workers=1) as url:
        result = asyncio.run(run_load(url, REQUESTS, CONCURRENCY, drain_timeout_s=300))
    print(
        f"{REQUESTS} submissions at concurrency {CONCURRENCY}: {REQUESTS / result.submit_wall_s:.0f}/s, "
        f"all ended after {result.end_to_end_s:.1f} s; statuses {dict(result.statuses)}"
    )
    assert result.server_errors == 0 and result.transport_errors == 0
    assert result.statuses[202] == REQUESTS and len(set(result.job_ids)) == REQUESTS
    assert result.final == {"finished": REQUESTS}

"""`python -m service`: run the API alone (Redis and workers run elsewhere; REDIS_URL must be set)."""

import uvicorn

from service.limits import problem_http_protocol
from service.settings import get_settings

if __name__ == "__main__":
    settings = get_settings()
    uvicorn.run(
        "service.main:app",
        host=settings.host,
        port=settings.port,
        proxy_headers=True,
        http=problem_http_protocol(),  # a request uvicorn cannot parse: 400 as problem details too
    )

"""The FastAPI application: routers, middleware and problem-details error handlers (OpenAPI at /docs)."""

from fastapi import Depends, FastAPI

from service.deps import document_open_access, require_api_key
from service.limits import BodySizeLimitMiddleware
from service.metrics import MetricsMiddleware
from service.metrics import router as metrics_router
from service.problems import document_problems, documented, install_problem_handlers
from service.routers import architectures, generate, health, jobs
from service.settings import Settings, get_settings


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app; `settings` fix the body limit and whether the OpenAPI document asks for API keys
    (routes read settings through `get_settings`)."""
    settings = settings or get_settings()
    app = FastAPI(
        title="DeepWeightFlow",
        version="0.1.0",
        summary="Complete neural-network weights on demand: flow matching in weight space, as a job API.",
    )
    keys = bool(settings.all_api_keys)
    for router in (generate.router, jobs.router, architectures.router):  # behind the API keys, if any
        app.include_router(
            router,
            dependencies=[Depends(require_api_key)],
            responses=documented({401: "missing or wrong API key"}) if keys else None,
        )
    app.include_router(health.router)
    app.include_router(metrics_router)
    install_problem_handlers(app)
    document_problems(app)
    if not keys:
        document_open_access(app)
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(MetricsMiddleware)
    return app


app = create_app()

"""The FastAPI application: routers, middleware and problem-details error handlers (OpenAPI at /docs)."""

from fastapi import Depends, FastAPI

from service.deps import require_api_key
from service.limits import BodySizeLimitMiddleware
from service.metrics import MetricsMiddleware
from service.metrics import router as metrics_router
from service.problems import document_problems, documented, install_problem_handlers
from service.routers import architectures, generate, health, jobs
from service.settings import Settings, get_settings


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app; `settings` fixes the body limit (routes read settings through `get_settings`)."""
    settings = settings or get_settings()
    app = FastAPI(
        title="DeepWeightFlow",
        version="0.1.0",
        summary="Complete neural-network weights on demand: flow matching in weight space, as a job API.",
    )
    for router in (generate.router, jobs.router, architectures.router):  # behind the API keys, if any
        app.include_router(
            router,
            dependencies=[Depends(require_api_key)],
            responses=documented({401: "missing or wrong API key (when the server has keys)"}),
        )
    app.include_router(health.router)
    app.include_router(metrics_router)
    install_problem_handlers(app)
    document_problems(app)
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(MetricsMiddleware)
    return app


app = create_app()

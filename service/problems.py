"""Every error leaves the API as RFC 9457 problem details, media type application/problem+json."""

import logging
import math
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ReadOnlyError as RedisReadOnlyError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.schemas import Problem

log = logging.getLogger(__name__)

PROBLEM_MEDIA_TYPE = "application/problem+json"
REDIS_RETRY_AFTER_S = 2  # what a 503 for an unreachable Redis tells clients to wait
# Redis errors that mean "not now" rather than a bug: unreachable, too slow, loading its data
# (BusyLoadingError is a ConnectionError), or a replica that a failover has not promoted yet.
REDIS_UNAVAILABLE = (RedisConnectionError, RedisTimeoutError, RedisReadOnlyError)


def documented(descriptions: dict[int, str]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for error statuses, answered with problem bodies: {404: "no such job"}."""
    return {status: {"model": Problem, "description": text} for status, text in descriptions.items()}


class ProblemError(Exception):
    """Raise from a route to answer with problem details; `kind` names the problem type (/problems/<kind>)."""

    def __init__(self, status: int, kind: str, detail: str, headers: dict[str, str] | None = None):
        super().__init__(detail)
        self.status, self.kind, self.detail, self.headers = status, kind, detail, headers


def validation_error(field: str, message: str, value: Any) -> RequestValidationError:
    """A 422 for one body field, shaped like pydantic's own errors (so `loc` names the field)."""
    return RequestValidationError(
        [{"type": "value_error", "loc": ("body", field), "msg": message, "input": value}]
    )


def problem_response(
    request: Request,
    status: int,
    detail: str | None,
    kind: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    body = {
        "type": f"/problems/{kind}" if kind else "about:blank",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        "instance": request.url.path,
        **extra,
    }
    return JSONResponse(body, status_code=status, media_type=PROBLEM_MEDIA_TYPE, headers=headers)


def _echoable(value: Any) -> bool:
    """Whether an input may be echoed in a problem: a JSON scalar. Not NaN, an infinity or 1e400 (read
    as one), which JSON cannot encode; not a list or an object, which may hold them (and be long)."""
    if isinstance(value, float):
        return math.isfinite(value)
    return isinstance(value, str | int | bool | None)


def _jsonable_errors(errors: Any) -> list[dict[str, Any]]:
    """pydantic errors without the non-JSON parts (`ctx` may hold exception objects; inputs, numbers
    JSON cannot write)."""
    return [
        {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
        | ({"input": e["input"]} if _echoable(e.get("input")) else {})
        for e in errors
    ]


async def _on_problem(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, ProblemError)
    return problem_response(request, error.status, error.detail, error.kind, error.headers)


async def _on_validation(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, RequestValidationError)
    errors = _jsonable_errors(error.errors())
    detail = (
        "; ".join(f"{'.'.join(str(p) for p in e['loc'][1:]) or 'body'}: {e['msg']}" for e in errors)
        or "invalid request"
    )
    return problem_response(request, 422, detail, "validation-error", errors=errors)


async def _on_http(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, StarletteHTTPException)
    return problem_response(request, error.status_code, str(error.detail), headers=error.headers)


async def _on_redis_unavailable(request: Request, error: Exception) -> JSONResponse:
    log.warning("%s %s: Redis unavailable: %r", request.method, request.url.path, error)
    return problem_response(
        request,
        503,
        "the job store (Redis) is unavailable; retry shortly",
        "redis-unavailable",
        headers={"Retry-After": str(REDIS_RETRY_AFTER_S)},
    )


async def _on_unexpected(request: Request, error: Exception) -> JSONResponse:
    return problem_response(request, 500, "internal error; see the server log", "internal-error")


def document_problems(app: FastAPI) -> None:
    """Make the OpenAPI schema say what the handlers answer: every 4xx and 5xx response of every route
    (FastAPI's own 422 included) is a Problem, in application/problem+json."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()  # cached by FastAPI in app.openapi_schema, and completed here once
            problem = {"schema": {"$ref": "#/components/schemas/Problem"}}
            schema.setdefault("components", {}).setdefault("schemas", {})["Problem"] = (
                Problem.model_json_schema(ref_template="#/components/schemas/{model}")
            )
            for operations in schema["paths"].values():
                for operation in operations.values():
                    for status, response in operation.get("responses", {}).items():
                        if status[0] in "45":
                            response["content"] = {PROBLEM_MEDIA_TYPE: problem}
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def install_problem_handlers(app: FastAPI) -> None:
    """Route every error (ours, validation, HTTP, Redis unavailable, unexpected) through problem details."""
    app.add_exception_handler(ProblemError, _on_problem)
    for unavailable in REDIS_UNAVAILABLE:
        app.add_exception_handler(unavailable, _on_redis_unavailable)
    app.add_exception_handler(RequestValidationError, _on_validation)
    app.add_exception_handler(StarletteHTTPException, _on_http)
    app.add_exception_handler(Exception, _on_unexpected)

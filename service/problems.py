"""Every error leaves the API as RFC 9457 problem details, media type application/problem+json."""

from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.schemas import Problem

PROBLEM_MEDIA_TYPE = "application/problem+json"


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


def _jsonable_errors(errors: Any) -> list[dict[str, Any]]:
    """pydantic errors without the non-JSON parts (`ctx` may hold exception objects)."""
    return [
        {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
        | ({"input": e["input"]} if isinstance(e.get("input"), str | int | float | bool | None) else {})
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


async def _on_unexpected(request: Request, error: Exception) -> JSONResponse:
    return problem_response(request, 500, "internal error; see the server log", "internal-error")


def install_problem_handlers(app: FastAPI) -> None:
    """Route every error (ours, validation, HTTP, unexpected) through problem details."""
    app.add_exception_handler(ProblemError, _on_problem)
    app.add_exception_handler(RequestValidationError, _on_validation)
    app.add_exception_handler(StarletteHTTPException, _on_http)
    app.add_exception_handler(Exception, _on_unexpected)

"""FastAPI dependencies, as `Annotated` aliases the routes take as parameters."""

from typing import Annotated, Any

from fastapi import Depends, FastAPI
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from rq import Queue

from service.auth import OPEN_ACCESS, Caller, authenticate
from service.catalog import Catalog, catalog_folder
from service.problems import ProblemError
from service.queue import generation_queue
from service.settings import Settings, get_settings

SettingsDep = Annotated[Settings, Depends(get_settings)]


# The dependencies below do no blocking I/O beyond a stat per artifact (the catalog re-reads only
# cards that changed), so they are `async def`: FastAPI would run plain functions in its thread
# pool, one thread hop each.


async def _queue(settings: SettingsDep) -> Queue:
    return generation_queue(settings)


async def _catalog(settings: SettingsDep) -> Catalog:
    return catalog_folder(settings.generators_dir).current()


QueueDep = Annotated[Queue, Depends(_queue)]
CatalogDep = Annotated[Catalog, Depends(_catalog)]

# auto_error=False: a missing or non-Bearer header reaches require_api_key as None (our 401, or
# open access when no keys are configured); the scheme documents the routes in OpenAPI when keys are
# configured (without keys, `document_open_access` takes it out).
_bearer = HTTPBearer(auto_error=False, description="an API key (`Authorization: Bearer <key>`)")


async def require_api_key(
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Caller:
    """The caller: with keys configured (`DWF_API_KEYS`, `DWF_API_KEY`), the owner of the key in
    `Authorization: Bearer <key>` (else 401); without keys, the anonymous open-access caller."""
    keys = settings.all_api_keys
    if not keys:
        return OPEN_ACCESS
    caller = authenticate(credentials.credentials if credentials else None, keys)
    if caller is None:
        raise ProblemError(
            401,
            "unauthorized",
            "a valid `Authorization: Bearer <api key>` header is required",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return caller


CallerDep = Annotated[Caller, Depends(require_api_key)]


def document_open_access(app: FastAPI) -> None:
    """For a server without API keys: the OpenAPI document declares no security scheme, since no route
    asks for credentials (clients and fuzzers would otherwise send them, and expect 401s)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()  # cached by FastAPI in app.openapi_schema, and completed here once
            schema.get("components", {}).pop("securitySchemes", None)
            for operations in schema["paths"].values():
                for operation in operations.values():
                    operation.pop("security", None)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

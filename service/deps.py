"""FastAPI dependencies, as `Annotated` aliases the routes take as parameters."""

from typing import Annotated

from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from rq import Queue

from service.auth import OPEN_ACCESS, Caller, authenticate
from service.catalog import Catalog, cached_catalog
from service.problems import ProblemError
from service.queue import generation_queue
from service.settings import Settings, get_settings

SettingsDep = Annotated[Settings, Depends(get_settings)]


# The dependencies below do no blocking I/O (the catalog is read once, then cached), so they are
# `async def`: FastAPI would run plain functions in its thread pool, one thread hop each.


async def _queue(settings: SettingsDep) -> Queue:
    return generation_queue(settings)


async def _catalog(settings: SettingsDep) -> Catalog:
    return cached_catalog(settings.generators_dir)


QueueDep = Annotated[Queue, Depends(_queue)]
CatalogDep = Annotated[Catalog, Depends(_catalog)]

# auto_error=False: a missing or non-Bearer header reaches require_api_key as None (our 401, or
# open access when no keys are configured); the scheme still documents the routes in OpenAPI.
_bearer = HTTPBearer(auto_error=False, description="an API key, needed when the server has keys configured")


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

"""FastAPI dependencies, as `Annotated` aliases the routes take as parameters."""

import secrets
from typing import Annotated

from fastapi import Depends, Header
from rq import Queue

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


async def require_api_key(
    settings: SettingsDep, authorization: Annotated[str | None, Header()] = None
) -> None:
    """With `DWF_API_KEY` set, demand `Authorization: Bearer <key>`; without it, the API is open."""
    if settings.api_key is None:
        return
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not secrets.compare_digest(token.encode(), settings.api_key.encode()):
        raise ProblemError(
            401,
            "unauthorized",
            "a valid `Authorization: Bearer <api key>` header is required",
            headers={"WWW-Authenticate": "Bearer"},
        )

"""Every error as an RFC 9457 problem document; never a stack trace, never a 500 for input."""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException

from otrt_core.jobs.refusals import ServiceError
from otrt_core.jobs.storage import StorageUnavailable

PROBLEM_JSON = "application/problem+json"
log = logging.getLogger("otrt.api")


def problem(
    status: int, detail: str, errors: list[dict[str, Any]] | None = None, **headers: str
) -> JSONResponse:
    body = {
        "type": "about:blank",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        "errors": errors or [],
    }
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def install(app: FastAPI) -> None:
    @app.exception_handler(ServiceError)
    async def service_error(_: Request, error: ServiceError) -> JSONResponse:
        return problem(error.status, error.detail, error.errors, **error.headers)

    @app.exception_handler(StorageUnavailable)
    async def storage_unavailable(request: Request, error: StorageUnavailable) -> JSONResponse:
        # The reason (bucket, endpoint, credentials) is the operator's: it stays in the log.
        log.warning("%s %s: %s", request.method, request.url.path, error)
        detail = "the file store is unavailable; nothing was stored, try again later"
        return problem(503, detail, **{"Retry-After": "30"})

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, error: RequestValidationError) -> JSONResponse:
        errors = [{"loc": list(e["loc"]), "msg": e["msg"]} for e in error.errors()]
        return problem(422, f"{len(errors)} problem(s) in the request", errors)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> JSONResponse:
        headers = dict(error.headers or {})
        if error.status_code == 405:
            headers["Allow"] = ", ".join(allowed_methods(request.app, request.url.path))
        return problem(error.status_code, str(error.detail), **headers)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception) -> JSONResponse:
        log.exception("%s %s failed", request.method, request.url.path)
        return problem(500, "internal error; the server log has the details")


def allowed_methods(app: FastAPI, path: str) -> list[str]:
    """Every method any documented route serves at ``path`` (Starlette lists only the first
    route's); each route's own pattern decides, path convertors included."""
    methods = set()
    for route in app.routes:
        documented = isinstance(route, APIRoute) and route.include_in_schema
        if documented and route.path_regex.fullmatch(path):
            methods |= route.methods - {"HEAD"}
    return sorted(methods)

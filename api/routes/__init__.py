"""One router per resource; each handler parses, calls the service, serializes."""

from __future__ import annotations

from typing import Any

from fastapi import Request

from api.errors import PROBLEM_JSON
from api.schemas import Problem
from otrt_core.jobs.service import Service


def problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the problem documents a route may answer.

    Every route may answer 400 (a body that is not JSON at all), 401, 422 and 429
    (the key's request rate).
    """
    return {
        status: {
            "model": Problem,  # registers it under components/schemas
            "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
        for status in (400, 401, 422, 429, *statuses)
    }


def created_with_links(parameter: str, *operation_ids: str) -> dict[int, dict[str, Any]]:
    """The 201 response, with OpenAPI links from the new object's ``id`` to the operations
    that take it as ``parameter`` (what lets a stateful fuzzer or a client generator chain
    create -> read -> act)."""
    links = {
        operation_id: {
            "operationId": operation_id,
            "parameters": {parameter: "$response.body#/id"},
        }
        for operation_id in operation_ids
    }
    return {201: {"links": links}}


def service(request: Request) -> Service:
    """The app's service layer (set by ``create_app``)."""
    return request.app.state.service

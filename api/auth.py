"""Who is asking: ``Authorization: Bearer <key>`` resolved to an owner, or the local owner."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from starlette.exceptions import HTTPException

LOCAL_OWNER = "local"  # every object's owner when auth is off (embedded, loopback only)


def current_owner(request: Request) -> str:
    """The owner the request acts for; 401 with ``WWW-Authenticate`` otherwise."""
    state = request.app.state
    if not state.auth:
        return LOCAL_OWNER
    scheme, _, key = request.headers.get("authorization", "").partition(" ")
    owner = state.keys.owner_of(key.strip()) if scheme.lower() == "bearer" and key else None
    if owner is None:
        raise HTTPException(401, "a valid API key is required", {"WWW-Authenticate": "Bearer"})
    return owner


Owner = Annotated[str, Depends(current_owner)]  # a route parameter: the caller's owner

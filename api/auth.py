"""Who is asking: ``Authorization: Bearer <key>`` resolved to a caller, or the local owner.

Every authenticated request spends one token of its key's rate limit (429
with ``Retry-After`` when none is left); revoked keys are refused at once,
since the key is read on every request.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException

from otrt_core.jobs.keys import Quota
from otrt_core.jobs.tables import ApiKey

LOCAL_OWNER = "local"  # every object's owner when auth is off (embedded, loopback only)
# Declares the scheme in the OpenAPI document (every operation that needs a key says so);
# the key itself is checked below, so a missing one is our 401, not FastAPI's.
BEARER = HTTPBearer(
    auto_error=False,
    scheme_name="apiKey",
    description="An API key from `otrt keys create`, as `Authorization: Bearer <key>`. "
    "Not needed when auth is off (the embedded server on loopback).",
)


@dataclass(frozen=True)
class Caller:
    """The owner a request acts for, and its key (``None`` when auth is off)."""

    owner: str
    key: ApiKey | None
    quota: Quota


def current_caller(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)],
) -> Caller:
    """The caller; 401 with ``WWW-Authenticate`` without a valid key, 429 past its rate."""
    state = request.app.state
    if not state.auth:
        return Caller(LOCAL_OWNER, None, state.quota)
    key = state.keys.find(credentials.credentials.strip()) if credentials else None
    if key is None:
        raise HTTPException(401, "a valid API key is required", {"WWW-Authenticate": "Bearer"})
    quota = state.quota.of(key)
    state.rate_limiter.take(key.id, quota.rate_limit, quota.rate_burst)
    return Caller(key.owner, key, quota)


# Dependencies that only read the caller are coroutines: FastAPI runs a plain function
# in its thread pool, a hop per request that costs CPU and buys nothing without I/O.
async def current_owner(caller: Annotated[Caller, Depends(current_caller)]) -> str:
    return caller.owner


async def admin_caller(caller: Annotated[Caller, Depends(current_caller)]) -> Caller:
    """A caller whose key has the admin scope (any caller when auth is off); else 403."""
    if caller.key is not None and not caller.key.admin:
        raise HTTPException(403, "this needs a key with the admin scope (otrt keys create --admin)")
    return caller


CallerDep = Annotated[Caller, Depends(current_caller)]  # a route parameter: the caller
Owner = Annotated[str, Depends(current_owner)]  # a route parameter: the caller's owner
Admin = Annotated[Caller, Depends(admin_caller)]  # a route parameter: an admin caller

"""/healthz, /readyz and /metrics (Prometheus)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from api.auth import Admin
from api.routes import problems

router = APIRouter(tags=["operations"])
PUBLIC = {"security": []}  # probes need no key


@router.get("/healthz", openapi_extra=PUBLIC)
def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get(
    "/readyz",
    responses={503: {"description": "A dependency is unreachable."}},
    openapi_extra=PUBLIC,
)
def readyz(request: Request) -> JSONResponse:
    """The database (and the broker, when one is configured) answer."""
    checks: dict[str, str] = {}
    try:
        with request.app.state.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as error:
        checks["database"] = f"unreachable: {type(error).__name__}"
    broker_check = request.app.state.broker_check
    if broker_check is not None:
        checks["broker"] = broker_check()
    ready = all(value == "ok" for value in checks.values())
    return JSONResponse(
        {"status": "ok" if ready else "unavailable", "checks": checks},
        status_code=200 if ready else 503,
    )


@router.get("/metrics", response_class=Response, responses=problems(403))
def prometheus_metrics(request: Request, _: Admin) -> Response:
    """Prometheus text format: jobs by status, queue depth, request latency.

    With auth on, it needs a key with the admin scope: it counts every owner's jobs.
    """
    return Response(generate_latest(request.app.state.registry), media_type=CONTENT_TYPE_LATEST)

"""The FastAPI application, built from its parts (the composition root passes them in)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from sqlalchemy import Engine

from api import errors
from api.limits import BodyLimit, RateLimiter
from api.routes import catalog, dashboard, datasets, files, jobs, ops, sweeps, uploads
from api.telemetry import LatencyMiddleware, make_registry
from otrt_core import __version__
from otrt_core.jobs.keys import KeyStore, Quota
from otrt_core.jobs.service import Service
from otrt_core.settings import Settings


@dataclass
class AppParts:
    engine: Engine
    service: Service
    keys: KeyStore
    auth: bool
    broker_check: Callable[[], str] | None = None  # "ok" or why not
    # Of keys that set none of their own; default: the settings' defaults.
    quota: Quota = field(default_factory=lambda: Quota.from_settings(Settings()))
    max_json_bytes: int = field(default_factory=lambda: Settings().max_json_bytes)


def create_app(parts: AppParts) -> FastAPI:
    app = FastAPI(
        title="otrt",
        version=__version__,
        description="Representation transfer by optimal transport: distillation and transfer "
        "jobs over HTTP. Errors are RFC 9457 problem documents.",
        license_info={"name": "Apache-2.0", "identifier": "Apache-2.0"},
        servers=[{"url": "/", "description": "The server that serves this document."}],
        # Operation ids are the handlers' names (create_job, get_job, …): what generated
        # clients call their functions.
        generate_unique_id_function=lambda route: route.name,
    )
    app.state.engine = parts.engine
    app.state.service = parts.service
    app.state.keys = parts.keys
    app.state.auth = parts.auth
    app.state.broker_check = parts.broker_check
    app.state.quota = parts.quota
    app.state.rate_limiter = RateLimiter()
    app.state.registry, latency = make_registry(parts.service.store.counts_by_status)
    app.add_middleware(BodyLimit, limit=parts.max_json_bytes)
    app.add_middleware(LatencyMiddleware, latency=latency)
    errors.install(app)
    for module in (files, uploads, jobs, sweeps, catalog, datasets, ops, dashboard):
        app.include_router(module.router)
    app.mount("/static", StaticFiles(directory=dashboard.STATIC), name="static")
    return app

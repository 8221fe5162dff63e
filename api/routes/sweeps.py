"""/v1/sweeps: submit, read, list, cancel; events (JSON or SSE); the best trial's artifacts."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import FileResponse, StreamingResponse

from api.auth import CallerDep, Owner
from api.downloads import download_response
from api.routes import created_with_links, problems, service
from api.routes.jobs import DOWNLOAD_RESPONSES
from api.schemas import ArtifactOut, EventOut, SweepOut, SweepPage
from api.sse import EVENTS_RESPONSES, MAX_EVENT_ID, events_response
from otrt_core.jobs.sweep_spec import SweepSpec
from otrt_core.jobs.sweep_store import TERMINAL

router = APIRouter(prefix="/v1/sweeps", tags=["sweeps"])
SWEEP_DOCUMENT = "sweep.json"

SWEEP_LINKS = created_with_links(
    "sweep_id", "get_sweep", "cancel_sweep", "sweep_events", "list_sweep_artifacts"
)


@router.post("", status_code=201, response_model=SweepOut, responses=problems() | SWEEP_LINKS)
def create_sweep(request: Request, caller: CallerDep, body: SweepSpec) -> SweepOut:
    """Starts a sweep: its first trials are queued at once, the rest as slots free up."""
    sweep = service(request).submit_sweep(
        caller.owner,
        body,
        key_id=caller.key.id if caller.key else None,
        max_queued=caller.quota.max_queued,
    )
    return SweepOut.model_validate(sweep)


@router.get("", response_model=SweepPage, responses=problems())
def list_sweeps(
    request: Request,
    owner: Owner,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    after: str | None = None,
) -> SweepPage:
    views, page = service(request).list_sweeps(owner, limit, after)
    return SweepPage(
        data=[SweepOut.model_validate(v) for v in views],
        has_more=page.has_more,
        next_after=page.next_after,
    )


@router.get("/{sweep_id}", response_model=SweepOut, responses=problems(404))
def get_sweep(request: Request, owner: Owner, sweep_id: str) -> SweepOut:
    return SweepOut.model_validate(service(request).sweep(owner, sweep_id))


@router.post(
    "/{sweep_id}/cancel", status_code=202, response_model=SweepOut, responses=problems(404, 409)
)
def cancel_sweep(request: Request, owner: Owner, sweep_id: str) -> SweepOut:
    """Cancels the sweep's queued trials at once and stops its running ones."""
    return SweepOut.model_validate(service(request).cancel_sweep(owner, sweep_id))


@router.get(
    "/{sweep_id}/events",
    response_model=list[EventOut],
    responses=EVENTS_RESPONSES | problems(404),
)
async def sweep_events(
    request: Request,
    owner: Owner,
    sweep_id: str,
    after: Annotated[int, Query(ge=0, le=MAX_EVENT_ID)] = 0,
    last_event_id: Annotated[int | None, Header(ge=0, le=MAX_EVENT_ID)] = None,
) -> list[EventOut] | StreamingResponse:
    """The sweep's events (points proposed, jobs ended, points pruned, its end) in order."""
    svc = service(request)
    return await events_response(
        request,
        max(after, last_event_id or 0),
        lambda since: svc.sweep_events(owner, sweep_id, since),
        lambda: svc.sweep_status(owner, sweep_id) in TERMINAL,
    )


@router.get("/{sweep_id}/artifacts", response_model=list[ArtifactOut], responses=problems(404))
def list_sweep_artifacts(request: Request, owner: Owner, sweep_id: str) -> list[ArtifactOut]:
    """The best trial's artifacts and ``sweep.json``; 404 until the sweep has ended."""
    artifacts, document = service(request).sweep_artifacts(owner, sweep_id)
    summary = ArtifactOut(
        name=SWEEP_DOCUMENT,
        bytes=len(document),
        sha256=hashlib.sha256(document).hexdigest(),
        created_at=datetime.now(UTC),
    )
    return [summary, *(ArtifactOut.of(a) for a in artifacts)]


@router.get(
    "/{sweep_id}/artifacts/{name}", response_class=FileResponse, responses=DOWNLOAD_RESPONSES
)
def download_sweep_artifact(request: Request, owner: Owner, sweep_id: str, name: str) -> Response:
    svc = service(request)
    if name == SWEEP_DOCUMENT:
        document = svc.sweep_document(owner, sweep_id)
        headers = {"Content-Disposition": f'attachment; filename="{SWEEP_DOCUMENT}"'}
        return Response(document, media_type="application/json", headers=headers)
    return download_response(request, svc.storage, svc.sweep_artifact(owner, sweep_id, name), name)

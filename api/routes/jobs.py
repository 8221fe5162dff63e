"""/v1/jobs: submit, read, list, cancel; metrics, events (JSON or SSE), report, artifacts."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Body, Header, Query, Request, Response
from fastapi.responses import FileResponse, StreamingResponse

from api.auth import CallerDep, Owner
from api.downloads import download_response
from api.examples import JOB_EXAMPLES
from api.routes import created_with_links, problems, service
from api.schemas import ArtifactOut, EventOut, JobOut, JobPage, MetricRecord, ReportOut
from api.sse import EVENTS_RESPONSES, MAX_EVENT_ID, events_response
from otrt_core.jobs import states
from otrt_core.spec import JobSpec

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])


JOB_LINKS = created_with_links(
    "job_id",
    "get_job",
    "cancel_job",
    "job_events",
    "job_metrics",
    "job_report",
    "list_artifacts",
)


REPLAY = {200: {"model": JobOut, "description": "A replay: the job this Idempotency-Key made."}}


@router.post(
    "",
    status_code=201,
    response_model=JobOut,
    responses=problems(409, 413, 429) | JOB_LINKS | REPLAY,
)
def create_job(
    request: Request,
    response: Response,
    caller: CallerDep,
    body: Annotated[JobSpec, Body(openapi_examples=JOB_EXAMPLES)],
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> JobOut:
    """Queues a job; the same ``Idempotency-Key`` and body return the same job (200).

    429 when the caller's key already has its ``max_queued`` jobs waiting.
    """
    job, created = service(request).submit(
        caller.owner,
        body,
        idempotency_key,
        key_id=caller.key.id if caller.key else None,
        max_queued=caller.quota.max_queued,
    )
    if not created:
        response.status_code = 200
    return JobOut.of(job)


@router.get("", response_model=JobPage, responses=problems())
def list_jobs(
    request: Request,
    owner: Owner,
    status: Literal[states.STATUSES] | None = None,  # type: ignore[valid-type]
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    after: str | None = None,
    sweep: Annotated[str | None, Query(description="Only the trials of this sweep.")] = None,
) -> JobPage:
    page = service(request).list_jobs(owner, status, limit, after, sweep)
    return JobPage(
        data=[JobOut.of(j) for j in page.items], has_more=page.has_more, next_after=page.next_after
    )


@router.get("/{job_id}", response_model=JobOut, responses=problems(404))
def get_job(request: Request, owner: Owner, job_id: str) -> JobOut:
    return JobOut.of(service(request).job(owner, job_id))


@router.post(
    "/{job_id}/cancel", status_code=202, response_model=JobOut, responses=problems(404, 409)
)
def cancel_job(request: Request, owner: Owner, job_id: str) -> JobOut:
    return JobOut.of(service(request).cancel(owner, job_id))


@router.get("/{job_id}/metrics", response_model=list[MetricRecord], responses=problems(404))
def job_metrics(request: Request, owner: Owner, job_id: str) -> list[MetricRecord]:
    return [MetricRecord.model_validate(r) for r in service(request).metrics(owner, job_id)]


@router.get(
    "/{job_id}/events",
    response_model=list[EventOut],
    responses=EVENTS_RESPONSES | problems(404),
)
async def job_events(
    request: Request,
    owner: Owner,
    job_id: str,
    after: Annotated[int, Query(ge=0, le=MAX_EVENT_ID)] = 0,
    last_event_id: Annotated[int | None, Header(ge=0, le=MAX_EVENT_ID)] = None,
) -> list[EventOut] | StreamingResponse:
    """Events after ``after`` (or the SSE ``Last-Event-ID``), in order."""
    svc = service(request)
    return await events_response(
        request,
        max(after, last_event_id or 0),
        lambda since: svc.events(owner, job_id, since),
        lambda: svc.job(owner, job_id).status in states.TERMINAL,
    )


@router.get("/{job_id}/report", response_model=ReportOut, responses=problems(404))
def job_report(request: Request, owner: Owner, job_id: str) -> Response:
    """What the finished job's student is worth: `report.json` itself, byte for byte
    (`report.html` shows it in a browser); 404 until the job has succeeded."""
    return Response(service(request).report(owner, job_id), media_type="application/json")


@router.get("/{job_id}/artifacts", response_model=list[ArtifactOut], responses=problems(404))
def list_artifacts(request: Request, owner: Owner, job_id: str) -> list[ArtifactOut]:
    return [ArtifactOut.of(a) for a in service(request).artifacts(owner, job_id)]


DOWNLOAD_RESPONSES = {
    200: {
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
        "description": "The file, with ETag (its sha256), Content-Disposition and Range support.",
    },
    206: {"description": "The requested byte range."},
    304: {"description": "If-None-Match matched the ETag."},
    307: {"description": "With OTRT_S3_PRESIGN=on: a presigned URL of the object store."},
    **problems(404, 416, 503),
}


@router.get("/{job_id}/artifacts/{name}", response_class=FileResponse, responses=DOWNLOAD_RESPONSES)
def download_artifact(request: Request, owner: Owner, job_id: str, name: str) -> Response:
    jobs = service(request)
    return download_response(request, jobs.storage, jobs.artifact(owner, job_id, name), name)

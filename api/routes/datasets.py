"""/v1/datasets/…: registered datasets (API.md v1.2): register, read, follow, list, delete.

``GET /v1/datasets`` (the built-ins, as in v1) stays in the catalog's routes;
the owner's registered datasets page at ``GET /v1/datasets/registered``.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import StreamingResponse
from starlette.convertors import Convertor, register_url_convertor

from api.auth import CallerDep, Owner
from api.routes import created_with_links, problems, service
from api.schemas import (
    DatasetRegistration,
    EventOut,
    RegisteredDatasetOut,
    RegisteredDatasetPage,
)
from api.sse import EVENTS_RESPONSES, MAX_EVENT_ID, events_response
from otrt_core.jobs.dataset_service import resource


class DatasetIdConvertor(Convertor):
    """Only ``ds_…`` segments are dataset ids: ``/v1/datasets/registered`` (the listing)
    is never read as the dataset "registered"."""

    regex = "ds_[A-Za-z0-9_-]+"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("dataset_id", DatasetIdConvertor())
router = APIRouter(prefix="/v1/datasets", tags=["datasets"])

DATASET_LINKS = created_with_links("dataset_id", "get_dataset", "dataset_events")


def _out(dataset) -> RegisteredDatasetOut:
    return RegisteredDatasetOut.model_validate(resource(dataset))


@router.post(
    "",
    status_code=202,
    response_model=RegisteredDatasetOut,
    responses=problems(404) | {202: DATASET_LINKS[201]},
)
def register_dataset(
    request: Request, caller: CallerDep, body: DatasetRegistration
) -> RegisteredDatasetOut:
    """Registers a dataset: a worker lists the source, reads every file and converts it
    once into a snapshot of shards; follow it at `GET /v1/datasets/{id}` or its events."""
    dataset = service(request).datasets.register(
        caller.owner,
        source=body.source,
        format=body.format,
        name=body.name,
        key_id=caller.key.id if caller.key else None,
    )
    return _out(dataset)


@router.get("/registered", response_model=RegisteredDatasetPage, responses=problems(404))
def list_registered_datasets(
    request: Request,
    owner: Owner,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    after: Annotated[str | None, Query(max_length=40)] = None,
) -> RegisteredDatasetPage:
    """The caller's registered datasets, newest first (cursor: ``next_after``)."""
    page = service(request).datasets.list(owner, limit, after)
    return RegisteredDatasetPage(
        data=[_out(d) for d in page.items], has_more=page.has_more, next_after=page.next_after
    )


DATASET = "/{dataset_id:dataset_id}"  # a ds_… id (DatasetIdConvertor)


@router.get(DATASET, response_model=RegisteredDatasetOut, responses=problems(404))
def get_dataset(request: Request, owner: Owner, dataset_id: str) -> RegisteredDatasetOut:
    return _out(service(request).datasets.get(owner, dataset_id))


@router.get(
    f"{DATASET}/events",
    response_model=list[EventOut],
    responses=EVENTS_RESPONSES | problems(404),
)
async def dataset_events(
    request: Request,
    owner: Owner,
    dataset_id: str,
    after: Annotated[int, Query(ge=0, le=MAX_EVENT_ID)] = 0,
    last_event_id: Annotated[int | None, Header(ge=0, le=MAX_EVENT_ID)] = None,
) -> list[EventOut] | StreamingResponse:
    """The conversion's events after ``after`` (or the SSE ``Last-Event-ID``), in order;
    the stream ends once the dataset is ready or failed."""
    datasets = service(request).datasets
    return await events_response(
        request,
        max(after, last_event_id or 0),
        lambda since: datasets.events(owner, dataset_id, since),
        lambda: datasets.ended(owner, dataset_id),
    )


@router.delete(DATASET, status_code=204, responses=problems(404, 409))
def delete_dataset(request: Request, owner: Owner, dataset_id: str) -> Response:
    """Forgets the dataset (409 while a job that has not ended trains on it)."""
    service(request).datasets.delete(owner, dataset_id)
    return Response(status_code=204)

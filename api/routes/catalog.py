"""/v1/architectures and /v1/datasets: what a job may name."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response

from api.auth import current_owner
from api.routes import problems
from api.schemas import ArchitectureOut, DatasetOut, Source
from otrt_core.catalog import catalog

NEXT_PAGE_LINK = {
    "description": 'When more names follow: `<URL of the next page>; rel="next"`.',
    "schema": {"type": "string"},
}
router = APIRouter(prefix="/v1", tags=["catalog"], dependencies=[Depends(current_owner)])


@router.get(
    "/architectures",
    response_model=list[ArchitectureOut],
    responses=problems() | {200: {"headers": {"Link": NEXT_PAGE_LINK}}},
    response_description="A page of names, in order.",
)
def list_architectures(
    request: Request,
    response: Response,
    source: Annotated[
        Source, Query(description="Whose names: otrt's zoo (default), timm's, torchvision's.")
    ] = "zoo",
    search: Annotated[
        str, Query(max_length=100, description="Keep names containing this (any case).")
    ] = "",
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    after: Annotated[str | None, Query(max_length=200, description="Names after this one.")] = None,
) -> list[ArchitectureOut]:
    """Every name a job's `architecture` may take, a page at a time. timm and torchvision
    names are built on demand (no weights are downloaded): their parameter counts and
    stages are known once a job builds them."""
    entries = [
        entry
        for entry in _entries(source)
        if search.lower() in entry.name.lower() and (after is None or entry.name > after)
    ]
    page = entries[:limit]
    if len(entries) > limit:
        following = request.url.include_query_params(after=page[-1].name)
        response.headers["Link"] = f'<{following}>; rel="next"'
    return page


def _entries(source: str) -> list[ArchitectureOut]:
    if source == "zoo":
        return sorted(
            (
                ArchitectureOut(source="zoo", **asdict(info))
                for info in catalog().architectures.values()
            ),
            key=lambda entry: entry.name,
        )
    return [
        ArchitectureOut(name=f"{source}/{name}", source=source, family=source)
        for name in sorted(catalog().libraries[source])
    ]


@router.get("/datasets", response_model=list[DatasetOut], responses=problems())
def list_datasets() -> list[DatasetOut]:
    return [DatasetOut(**asdict(info)) for info in catalog().datasets.values()]
